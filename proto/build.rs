//! Compiles `schemas/*.proto` with `protox` (pure Rust, no system `protoc`) and
//! feeds the descriptors to `prost-build`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["schemas/ledgermesh.proto", "schemas/circuit_v2.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(files, ["schemas"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
