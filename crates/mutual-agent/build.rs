//! Generates the Rust types and tonic services of the agent's two APIs: the SPIFFE Workload API
//! (proto/workload.proto) and Envoy's SDS (proto/envoy/..., a wire-compatible subset of Envoy's
//! published protos, see their headers). The .protos are compiled by protox (pure Rust), so
//! building mutual needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(
        [
            "workload.proto",
            "envoy/service/secret/v3/sds.proto",
            // What SDS resources are (inside google.protobuf.Any): imported by nothing.
            "envoy/extensions/transport_sockets/tls/v3/secret.proto",
        ],
        ["proto"],
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
