//! Generated CSI v1.12 types, clients and servers (package `csi.v1`), and
//! the encoded descriptor set that gRPC reflection serves.
//!
//! Only this crate touches these types: everything past the adapter works
//! with the domain types of `csi-core`.

/// The `csi` proto package.
pub mod csi {
    /// Package `csi.v1`: messages, `*_client` and `*_server` modules.
    #[allow(
        missing_docs,
        clippy::all,
        clippy::pedantic,
        rustdoc::invalid_html_tags,
        rustdoc::bare_urls
    )]
    pub mod v1 {
        tonic::include_proto!("csi.v1");
    }
}

/// Encoded `FileDescriptorSet` of `csi.proto` and its imports.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/csi_descriptor_set.bin"));

/// Fully qualified names of the gRPC services the proto declares.
pub const SERVICE_NAMES: [&str; 5] = [
    "csi.v1.Identity",
    "csi.v1.Controller",
    "csi.v1.GroupController",
    "csi.v1.SnapshotMetadata",
    "csi.v1.Node",
];

#[cfg(test)]
mod tests {
    use super::{FILE_DESCRIPTOR_SET, SERVICE_NAMES};
    use prost::Message as _;
    use prost_types::FileDescriptorSet;

    fn csi_file() -> prost_types::FileDescriptorProto {
        let set = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("descriptor set decodes");
        set.file
            .into_iter()
            .find(|f| f.package() == "csi.v1")
            .expect("csi.v1 file present")
    }

    #[test]
    fn descriptor_set_declares_exactly_the_csi_services() {
        let file = csi_file();
        let mut declared: Vec<String> = file
            .service
            .iter()
            .map(|s| format!("csi.v1.{}", s.name()))
            .collect();
        declared.sort();
        let mut expected: Vec<String> = SERVICE_NAMES.iter().map(|s| s.to_string()).collect();
        expected.sort();
        assert_eq!(declared, expected);
    }

    #[test]
    fn descriptor_set_carries_its_well_known_imports() {
        let set = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        let names: Vec<&str> = set.file.iter().map(|f| f.name()).collect();
        for import in [
            "google/protobuf/descriptor.proto",
            "google/protobuf/timestamp.proto",
            "google/protobuf/wrappers.proto",
        ] {
            assert!(names.contains(&import), "{import} missing from {names:?}");
        }
    }

    /// Occurrences of an option set to `true` in the encoded descriptors:
    /// the option's key (field `number`, varint) followed by the value 1.
    fn encoded_true_options(number: u32) -> usize {
        let mut needle = Vec::new();
        prost::encoding::encode_key(number, prost::encoding::WireType::Varint, &mut needle);
        needle.push(1);
        FILE_DESCRIPTOR_SET
            .windows(needle.len())
            .filter(|w| *w == needle.as_slice())
            .count()
    }

    #[test]
    fn every_secret_field_keeps_the_csi_secret_option() {
        let source = include_str!("../proto/csi.proto");
        let marked = source.matches("(csi_secret) = true").count();
        assert!(marked > 10, "only {marked} secret fields in csi.proto");
        assert_eq!(encoded_true_options(1059), marked);
    }

    #[test]
    fn every_alpha_marker_is_kept_in_the_descriptors() {
        // All alpha_* options share number 1060, each on its own options type.
        let source = include_str!("../proto/csi.proto");
        let marked = source.matches("(alpha_").count();
        assert!(marked > 10, "only {marked} alpha markers in csi.proto");
        assert_eq!(encoded_true_options(1060), marked);
    }

    #[test]
    fn generated_enums_keep_the_spec_numbers() {
        use super::csi::v1::controller_service_capability::rpc::Type as Rpc;
        use super::csi::v1::volume_capability::access_mode::Mode;
        assert_eq!(Rpc::ModifyVolume as i32, 14);
        assert_eq!(Rpc::GetSnapshot as i32, 15);
        assert_eq!(Mode::SingleNodeMultiWriter as i32, 7);
        assert_eq!(Mode::MultiNodeMultiWriter as i32, 5);
    }
}
