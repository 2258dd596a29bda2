//! Volume handles and snapshot ids of both backends.
//!
//! Properties: parsing never panics; errors are InvalidArgument or NotFound; no id is claimed
//! by both backends; a parsed id re-emitted parses back to the same value; a parsed volume
//! directory never holds `..`, `.`, empty or control-character components, never lies in the
//! metadata directory, and joined to a root stays below it.
#![no_main]

use std::path::{Component, Path};
use std::sync::LazyLock;

use beegfs_backend::volume_id::{
    BeegfsSnapshotId, BeegfsVolumeId, VolumePath as BeegfsPath, decode_path, encode_path,
};
use csi_core::ErrorCode;
use libfuzzer_sys::fuzz_target;
use lustre_backend::config::LustreConfig;
use lustre_backend::volume_id::{
    HandleFormat, LustreSnapshotId, LustreVolumeHandle, canonical_volume_id, check_name,
    parse_volume_id,
};

/// The metadata directory the Lustre backend keeps its records in (its default).
const META: &str = ".pfs-csi";

/// Two entries as a real cluster has them: a v1.x-compatible one, and one mounted two levels
/// deep on a subdirectory of its filesystem.
static CONFIG: LazyLock<LustreConfig> = LazyLock::new(|| {
    LustreConfig::from_value(serde_json::json!({"exascaler_map": {
        "exa1": {"exaFS": "10.3.3.200@tcp:/exaFS", "mountPoint": "/exaFS", "v1xCompatible": true},
        "exa2": {"exaFS": "10.3.1.200@tcp:10.3.2.200@tcp:/csi-fs/zone-2", "mountPoint": "/mnt/zone-2"},
        "fe80": {"exaFS": "fe80::1@tcp,fe80::2@o2ib:/v6fs", "mountPoint": "/v6"},
    }}))
    .expect("the fuzz configuration is valid")
});

fuzz_target!(|data: &[u8]| {
    let id = String::from_utf8_lossy(data);
    lustre_volume(&id);
    lustre_snapshot(&id);
    beegfs_volume(&id);
    beegfs_snapshot(&id);
    percent_coding(&id);
});

/// Checks the components of a resolved Lustre volume directory.
fn check_lustre_dir(id: &str, h: &LustreVolumeHandle) {
    for c in h.dir.components() {
        assert!(
            !c.is_empty() && c != "." && c != ".." && !c.contains('/'),
            "{id:?}: component {c:?}"
        );
        assert!(!c.chars().any(char::is_control), "{id:?}: component {c:?}");
    }
    assert_ne!(
        h.dir.components().first().map(String::as_str),
        Some(META),
        "{id:?} resolved into the metadata directory"
    );
    let root = Path::new("/fs-root");
    let joined = h.dir.under(root);
    assert!(joined.starts_with(root), "{id:?}: {}", joined.display());
    assert!(
        !joined.components().any(|c| c == Component::ParentDir),
        "{id:?}: {}",
        joined.display()
    );
}

fn lustre_volume(id: &str) {
    let Some(parsed) = parse_volume_id(id, &CONFIG, META) else {
        return;
    };
    assert!(
        !BeegfsVolumeId::claims(id),
        "{id:?} is claimed by both backends"
    );
    let h = match parsed {
        Ok(h) => h,
        Err(e) => {
            assert!(
                matches!(e.code(), ErrorCode::InvalidArgument | ErrorCode::NotFound),
                "{id:?}: {e} has code {:?}",
                e.code()
            );
            return;
        }
    };
    let entry = CONFIG
        .entry(&h.entry)
        .unwrap_or_else(|| panic!("{id:?} resolved to unknown entry {}", h.entry));
    check_lustre_dir(id, &h);
    match &h.location {
        None => {
            // The 2.0 form names the same directory of the same entry.
            let again = format!("{}:{}/{}", entry.name, entry.mount_point.display(), h.dir);
            let h2 = parse_volume_id(&again, &CONFIG, META)
                .unwrap_or_else(|| panic!("{again:?} (from {id:?}) not claimed"))
                .unwrap_or_else(|e| panic!("{again:?} (from {id:?}): {e}"));
            assert_eq!(
                (&h2.entry, &h2.dir, &h2.location, h2.format),
                (&h.entry, &h.dir, &None, HandleFormat::V20),
                "{again:?} from {id:?}"
            );
            // A one-component directory has a canonical id, which reads back the same.
            if let Some(name) = h.dir.as_single()
                && check_name("name", name).is_ok()
                && let Ok(canonical) = canonical_volume_id(entry, name)
            {
                let h3 = parse_volume_id(&canonical, &CONFIG, META)
                    .unwrap_or_else(|| panic!("{canonical:?} not claimed"))
                    .unwrap_or_else(|e| panic!("{canonical:?}: {e}"));
                assert_eq!(
                    (&h3.entry, &h3.dir, &h3.location),
                    (&h.entry, &h.dir, &None),
                    "{canonical:?} from {id:?}"
                );
            }
        }
        Some(loc) => {
            assert!(
                loc.mount_point.is_absolute()
                    && loc.mount_point != Path::new("/")
                    && !loc
                        .mount_point
                        .components()
                        .any(|c| c == Component::ParentDir),
                "{id:?}: mount point {}",
                loc.mount_point.display()
            );
            assert!(
                !loc.exa_fs.subdir.iter().any(|c| c == ".." || c.is_empty()),
                "{id:?}: {:?}",
                loc.exa_fs
            );
            // The 2.3.3 form written back reads back the same.
            let again = format!(
                "{}:{}:{}:/{}",
                entry.name,
                loc.exa_fs.to_string().replace(':', ";"),
                loc.mount_point.display(),
                h.dir
            );
            let h2 = parse_volume_id(&again, &CONFIG, META)
                .unwrap_or_else(|| panic!("{again:?} (from {id:?}) not claimed"))
                .unwrap_or_else(|e| panic!("{again:?} (from {id:?}): {e}"));
            assert_eq!(h2, h, "{again:?} from {id:?}");
        }
    }
}

fn lustre_snapshot(id: &str) {
    let Some(parsed) = LustreSnapshotId::parse(id, &CONFIG) else {
        return;
    };
    assert!(
        !BeegfsSnapshotId::claims(id),
        "{id:?} is claimed by both backends"
    );
    match parsed {
        Ok(s) => {
            assert!(CONFIG.entry(&s.entry).is_some(), "{id:?}");
            assert!(check_name("name", &s.name).is_ok(), "{id:?}: {:?}", s.name);
            assert_eq!(s.to_string(), id);
            let again = LustreSnapshotId::parse(&s.to_string(), &CONFIG)
                .expect("claimed")
                .expect("valid");
            assert_eq!(again, s);
        }
        Err(e) => assert!(
            matches!(e.code(), ErrorCode::InvalidArgument | ErrorCode::NotFound),
            "{id:?}: {e}"
        ),
    }
}

/// Checks a BeeGFS path: clean, absolute, and below any root it is joined to.
fn check_beegfs_path(id: &str, p: &BeegfsPath) {
    let s = p.as_str();
    assert!(s.starts_with('/'), "{id:?}: {s:?}");
    assert!(p.is_root() || !s.ends_with('/'), "{id:?}: {s:?}");
    assert!(!s.contains("//"), "{id:?}: {s:?}");
    assert!(
        !s.split('/').any(|c| c == "." || c == ".."),
        "{id:?}: {s:?}"
    );
    assert!(!s.chars().any(char::is_control), "{id:?}: {s:?}");
    let root = Path::new("/mnt/beegfs");
    let joined = root.join(p.relative());
    assert!(
        joined.starts_with(root) && !joined.components().any(|c| c == Component::ParentDir),
        "{id:?}: {}",
        joined.display()
    );
    // Cleaning is idempotent, and the family relations hold.
    assert_eq!(&BeegfsPath::clean("p", s).expect("clean again"), p);
    assert!(p.parent().contains(p), "{id:?}");
    assert!(BeegfsPath::root().contains(p), "{id:?}");
    let ancestors = p.ancestors_top_down();
    assert_eq!(ancestors.last().unwrap_or(&BeegfsPath::root()), p);
    for a in &ancestors {
        assert!(a.contains(p), "{id:?}: {a} does not contain {p}");
    }
}

fn beegfs_volume(id: &str) {
    match BeegfsVolumeId::parse(id) {
        Ok(v) => {
            assert!(BeegfsVolumeId::claims(id));
            assert!(
                parse_volume_id(id, &CONFIG, META).is_none(),
                "{id:?} is claimed by both backends"
            );
            assert!(
                beegfs_backend::config::check_host(&v.host).is_ok(),
                "{id:?}"
            );
            check_beegfs_path(id, &v.path);
            let again = v.to_string();
            assert_eq!(
                BeegfsVolumeId::parse(&again).unwrap_or_else(|e| panic!("{again:?}: {e}")),
                v,
                "{again:?} from {id:?}"
            );
        }
        Err(e) => assert_eq!(e.code(), ErrorCode::InvalidArgument, "{id:?}: {e}"),
    }
}

fn beegfs_snapshot(id: &str) {
    match BeegfsSnapshotId::parse(id) {
        Ok(s) => {
            assert!(BeegfsSnapshotId::claims(id));
            assert!(
                LustreSnapshotId::parse(id, &CONFIG).is_none(),
                "{id:?} is claimed by both backends"
            );
            assert!(
                !s.name.is_empty() && !s.name.contains('/') && s.name != "." && s.name != "..",
                "{id:?}: name {:?}",
                s.name
            );
            check_beegfs_path(id, &s.base);
            let again = s.to_string();
            assert_eq!(
                BeegfsSnapshotId::parse(&again).unwrap_or_else(|e| panic!("{again:?}: {e}")),
                s,
                "{again:?} from {id:?}"
            );
        }
        Err(e) => assert_eq!(e.code(), ErrorCode::InvalidArgument, "{id:?}: {e}"),
    }
}

fn percent_coding(text: &str) {
    let encoded = encode_path(text);
    assert_eq!(decode_path(&encoded).as_deref(), Some(text));
    if let Some(decoded) = decode_path(text) {
        // Whatever decodes, re-encoded, decodes to the same text.
        assert_eq!(decode_path(&encode_path(&decoded)), Some(decoded));
    }
}
