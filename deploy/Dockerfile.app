# The crm-events Spin app in a container (for compose). On SpinKube or Fermyon,
# publish the app as an OCI artifact instead: `spin registry push <registry>/crm-events:<tag>`.
#   docker build -f deploy/Dockerfile.app -t crm-events-app .
FROM rust:1.95-bookworm AS build
RUN rustup target add wasm32-wasip2
WORKDIR /src
COPY . .
RUN cargo build --release --locked --target wasm32-wasip2 \
      -p crm-events-info -p crm-events-health -p crm-events-metrics -p crm-events-sse -p crm-events-session -p crm-events-viewer

# The Spin CLI image; any Spin >= 2.0 runs these WASI 0.2 components.
FROM ghcr.io/spinframework/spin:v3.4.1
WORKDIR /app
COPY spin.toml /app/spin.toml
COPY --from=build /src/target/wasm32-wasip2/release/*.wasm /app/target/wasm32-wasip2/release/
EXPOSE 3000
ENTRYPOINT ["spin", "up", "--from", "/app/spin.toml", "--listen", "0.0.0.0:3000"]
