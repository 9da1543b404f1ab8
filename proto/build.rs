//! Compiles `proto/*.proto` with `protox` (pure Rust), so building needs no
//! system `protoc`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/ossc.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
