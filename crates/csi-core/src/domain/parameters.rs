//! StorageClass / VolumeSnapshotClass parameters and the metadata the provisioner adds.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// The prefix of keys the Kubernetes sidecars reserve (`csi.storage.k8s.io/pvc/name`...).
const RESERVED_PREFIX: &str = "csi.storage.k8s.io/";

/// Names of the PVC and PV, added by external-provisioner with `--extra-create-metadata`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestMetadata {
    /// `csi.storage.k8s.io/pvc/name`.
    pub pvc_name: Option<String>,
    /// `csi.storage.k8s.io/pvc/namespace`.
    pub pvc_namespace: Option<String>,
    /// `csi.storage.k8s.io/pv/name`.
    pub pv_name: Option<String>,
}

/// Backend parameters: the request's parameters without the reserved `csi.storage.k8s.io/`
/// keys, which are split off into [`RequestMetadata`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parameters(BTreeMap<String, String>);

impl Parameters {
    /// Splits raw request parameters into backend parameters and sidecar metadata.
    pub fn from_request(raw: BTreeMap<String, String>) -> (Self, RequestMetadata) {
        let mut meta = RequestMetadata::default();
        let mut params = BTreeMap::new();
        for (k, v) in raw {
            match k.strip_prefix(RESERVED_PREFIX) {
                Some("pvc/name") => meta.pvc_name = Some(v),
                Some("pvc/namespace") => meta.pvc_namespace = Some(v),
                Some("pv/name") => meta.pv_name = Some(v),
                Some(_) => {}
                None => {
                    params.insert(k, v);
                }
            }
        }
        (Self(params), meta)
    }

    /// Wraps a map as it is.
    pub fn new(map: BTreeMap<String, String>) -> Self {
        Self(map)
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The parameters as a map.
    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// Fails with InvalidArgument naming the first key not in `known`.
    pub fn reject_unknown(&self, field: &str, known: &[&str]) -> Result<()> {
        match self.0.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(Error::invalid(
                &format!("{field}[{k}]"),
                format!(
                    "unknown parameter; known parameters are {}",
                    known.join(", ")
                ),
            )),
            None => Ok(()),
        }
    }

    /// Parses `key` with `parse`, naming the key and the reason on failure.
    pub fn parse<T>(&self, key: &str, parse: impl FnOnce(&str) -> Option<T>) -> Result<Option<T>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => parse(v.trim()).map(Some).ok_or_else(|| {
                Error::invalid(
                    &format!("parameters[{key}]"),
                    format!("invalid value {v:?}"),
                )
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_keys_become_metadata_and_unknown_keys_are_named() {
        let raw: BTreeMap<String, String> = [
            ("csi.storage.k8s.io/pvc/name", "data"),
            ("csi.storage.k8s.io/pvc/namespace", "ml"),
            ("csi.storage.k8s.io/pv/name", "pvc-1"),
            ("csi.storage.k8s.io/provisioner-secret-name", "s"),
            ("projectId", "7"),
            ("colour", "blue"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let (params, meta) = Parameters::from_request(raw);
        assert_eq!(meta.pvc_name.as_deref(), Some("data"));
        assert_eq!(meta.pv_name.as_deref(), Some("pvc-1"));
        assert_eq!(params.as_map().len(), 2);
        let err = params
            .reject_unknown("parameters", &["projectId"])
            .unwrap_err();
        assert!(err.to_string().contains("parameters[colour]"), "{err}");
        assert_eq!(
            params
                .parse("projectId", |v| v.parse::<u32>().ok())
                .unwrap(),
            Some(7)
        );
        assert!(params.parse("colour", |v| v.parse::<u32>().ok()).is_err());
    }
}
