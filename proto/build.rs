//! Generates the tonic/prost code with a vendored `protoc`, so a build needs
//! no system protobuf compiler.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    tonic_build::configure().compile_protos(
        &[
            "proto/shoal/kv/v1/kv.proto",
            "proto/shoal/admin/v1/admin.proto",
            "proto/shoal/raft/v1/raft.proto",
            "proto/shoal/sm/v1/sm.proto",
            "proto/shoal/mover/v1/mover.proto",
        ],
        &["proto"],
    )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
