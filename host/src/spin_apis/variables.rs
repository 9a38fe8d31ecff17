//! `fermyon:spin/variables@2.0.0`: a component's variables, as the manifest resolved
//! them (explicit overrides, then `SPIN_VARIABLE_*`, then the defaults).

use super::fermyon::spin::variables::{self as wit, Error as VariablesError};
use crate::runtime::InstanceState;

impl wit::Host for InstanceState {
    async fn get(&mut self, name: String) -> wasmtime::Result<Result<String, VariablesError>> {
        let valid = !name.is_empty()
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
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
