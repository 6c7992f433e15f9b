//! Compiles the snix protos (daemon/proto) with protox, a pure-Rust protobuf
//! compiler, so building needs no `protoc` on the machine.

fn main() {
    let protos = [
        "proto/snix/castore/v1/castore.proto",
        "proto/snix/castore/v1/rpc_blobstore.proto",
        "proto/snix/castore/v1/rpc_directory.proto",
        "proto/snix/store/v1/pathinfo.proto",
        "proto/snix/store/v1/rpc_pathinfo.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"]).expect("compiling daemon/proto");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)
        .expect("generating gRPC code");
}
