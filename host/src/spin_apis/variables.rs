//! `fermyon:spin/variables@2.0.0`: a component's variables, as the manifest resolved
//! them (explicit overrides, then `SPIN_VARIABLE_*`, then the defaults).

use super::fermyon::spin::variables::{self as wit, Error as VariablesError};
use crate::runtime::InstanceState;

impl wit::Host for InstanceState {
    async fn get(&mut self, name: String) -> wasmtime::Result<Result<String, VariablesError>> {
        if !crate::manifest::valid_variable_name(&name) {
            return Ok(Err(VariablesError::InvalidName(name)));
        }
        Ok(self
            .component
            .variables
            .get(&name)
            .cloned()
            .ok_or(VariablesError::Undefined(name)))
    }
}
