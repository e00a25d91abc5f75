//! Compiles the .proto files with tonic-build, and writes a file descriptor set for server reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_build::configure()
        .file_descriptor_set_path(out.join("baton_descriptor.bin"))
        .codec_path("crate::codec::StrictCodec")
        .compile_protos(&["proto/baton/v1/baton.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
