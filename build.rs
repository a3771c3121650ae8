//! Generates the Core ML protobuf types (src/mil/proto.rs includes them) from Apple's schema,
//! committed as a FileDescriptorSet in proto/coreml.fds, so no `protoc` is needed.

use prost::Message;

fn main() {
    let path = "proto/coreml.fds";
    println!("cargo:rerun-if-changed={path}");
    println!("cargo:rerun-if-changed=build.rs");
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let fds = prost_types::FileDescriptorSet::decode(bytes.as_slice())
        .unwrap_or_else(|e| panic!("decoding {path} as a FileDescriptorSet: {e}"));
    prost_build::Config::new()
        // Maps in BTreeMap: sorted on the wire, so the same program gives the same bytes.
        .btree_map(["."])
        .compile_fds(fds)
        .unwrap_or_else(|e| panic!("generating Rust types from {path}: {e}"));
}
