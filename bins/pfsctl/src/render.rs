//! What each command prints: JSON that mirrors the CSI response message
//! (the spec's field names, enums by name, timestamps in RFC 3339) and a
//! short aligned text for people.

use std::collections::{BTreeMap, HashMap};

use k8s_adapter::proto::csi::v1::{
    ControllerExpandVolumeResponse, ControllerGetCapabilitiesResponse, ControllerGetVolumeResponse,
    GetCapacityResponse, GetPluginCapabilitiesResponse, GetPluginInfoResponse,
    NodeGetCapabilitiesResponse, NodeGetInfoResponse, NodeGetVolumeStatsResponse, ProbeResponse,
    Snapshot, Topology, ValidateVolumeCapabilitiesResponse, Volume, VolumeCapability,
    VolumeCondition, VolumeContentSource, controller_service_capability, list_snapshots_response,
    list_volumes_response, node_service_capability, plugin_capability, volume_capability,
    volume_content_source, volume_usage,
};
use serde_json::{Map, Value, json};

use crate::{
    parse::format_size,
    table::{fields, table},
};

/// A command's output in both forms.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// Printed with `--json`.
    pub json: Value,
    /// Printed otherwise; ends with a newline.
    pub human: String,
}

impl Rendered {
    /// The text for the chosen form, ending with a newline.
    pub fn text(&self, as_json: bool) -> String {
        if as_json {
            let mut text =
                serde_json::to_string_pretty(&self.json).unwrap_or_else(|_| self.json.to_string());
            text.push('\n');
            text
        } else {
            self.human.clone()
        }
    }
}

/// An acknowledgement for calls whose response is empty: `{}` and a sentence.
pub fn done(sentence: String) -> Rendered {
    Rendered {
        json: json!({}),
        human: format!("{sentence}\n"),
    }
}

/// The name of an enum value, or its number when this client does not know it.
fn enum_name<E: TryFrom<i32>>(value: i32, name: impl Fn(E) -> &'static str) -> String {
    E::try_from(value).map_or_else(|_| value.to_string(), |e| name(e).to_owned())
}

/// A string map as a JSON object with sorted keys.
pub fn map_json(map: &HashMap<String, String>) -> Value {
    Value::Object(
        map.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect::<Map<_, _>>(),
    )
}

/// `k=v` lines, sorted by key.
fn map_lines(map: &HashMap<String, String>) -> String {
    let sorted: BTreeMap<_, _> = map.iter().collect();
    sorted
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One topology as `k=v,k2=v2`, sorted by key.
fn topology_text(topology: &Topology) -> String {
    let sorted: BTreeMap<_, _> = topology.segments.iter().collect();
    sorted
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn topology_json(topology: &Topology) -> Value {
    json!({ "segments": map_json(&topology.segments) })
}

/// A byte count for people: `10Gi (10737418240 bytes)`.
fn bytes_text(bytes: i64) -> String {
    if bytes >= 1024 {
        format!("{} ({bytes} bytes)", format_size(bytes))
    } else {
        format!("{bytes} bytes")
    }
}

/// Seconds and nanoseconds since the epoch in RFC 3339 (UTC); the fraction
/// is shown only when there is one.
pub fn rfc3339(seconds: i64, nanos: i32) -> String {
    let days = seconds.div_euclid(86_400);
    let secs_of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (h, m, s) = (
        secs_of_day / 3600,
        secs_of_day % 3600 / 60,
        secs_of_day % 60,
    );
    let fraction = if nanos > 0 {
        format!(".{nanos:09}").trim_end_matches('0').to_owned()
    } else {
        String::new()
    };
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}{fraction}Z")
}

/// The proleptic Gregorian date of a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn condition_json(condition: Option<&VolumeCondition>) -> Value {
    condition.map_or(
        Value::Null,
        |c| json!({ "abnormal": c.abnormal, "message": c.message }),
    )
}

fn condition_text(condition: Option<&VolumeCondition>) -> String {
    match condition {
        None => String::new(),
        Some(c) if c.abnormal => format!("abnormal: {}", c.message),
        Some(c) if c.message.is_empty() => "ok".to_owned(),
        Some(c) => format!("ok: {}", c.message),
    }
}

fn content_source_json(source: Option<&VolumeContentSource>) -> Value {
    match source.and_then(|s| s.r#type.as_ref()) {
        Some(volume_content_source::Type::Snapshot(s)) => {
            json!({ "snapshot": { "snapshot_id": s.snapshot_id } })
        }
        Some(volume_content_source::Type::Volume(v)) => {
            json!({ "volume": { "volume_id": v.volume_id } })
        }
        None => Value::Null,
    }
}

fn content_source_text(source: Option<&VolumeContentSource>) -> String {
    match source.and_then(|s| s.r#type.as_ref()) {
        Some(volume_content_source::Type::Snapshot(s)) => format!("snapshot {}", s.snapshot_id),
        Some(volume_content_source::Type::Volume(v)) => format!("volume {}", v.volume_id),
        None => String::new(),
    }
}

/// A volume as JSON.
pub fn volume_json(volume: &Volume) -> Value {
    json!({
        "volume_id": volume.volume_id,
        "capacity_bytes": volume.capacity_bytes,
        "volume_context": map_json(&volume.volume_context),
        "content_source": content_source_json(volume.content_source.as_ref()),
        "accessible_topology": volume.accessible_topology.iter().map(topology_json).collect::<Vec<_>>(),
    })
}

/// The text fields of a volume.
fn volume_fields(volume: &Volume) -> Vec<(&'static str, String)> {
    vec![
        ("volume id", volume.volume_id.clone()),
        (
            "capacity",
            if volume.capacity_bytes > 0 {
                bytes_text(volume.capacity_bytes)
            } else {
                "unspecified".to_owned()
            },
        ),
        (
            "source",
            content_source_text(volume.content_source.as_ref()),
        ),
        (
            "topology",
            volume
                .accessible_topology
                .iter()
                .map(topology_text)
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        ("context", map_lines(&volume.volume_context)),
    ]
}

/// GetPluginInfo.
pub fn plugin_info(r: &GetPluginInfoResponse) -> Rendered {
    Rendered {
        json: json!({
            "name": r.name,
            "vendor_version": r.vendor_version,
            "manifest": map_json(&r.manifest),
        }),
        human: fields(&[
            ("name", r.name.clone()),
            ("vendor version", r.vendor_version.clone()),
            ("manifest", map_lines(&r.manifest)),
        ]),
    }
}

/// Probe: `ready` is absent when the plugin does not say.
pub fn probe(r: &ProbeResponse) -> Rendered {
    Rendered {
        json: json!({ "ready": r.ready }),
        human: match r.ready {
            Some(true) => "ready\n",
            Some(false) => "not ready\n",
            None => "ready (not reported by the plugin)\n",
        }
        .to_owned(),
    }
}

/// GetPluginCapabilities.
pub fn plugin_capabilities(r: &GetPluginCapabilitiesResponse) -> Rendered {
    use plugin_capability::{Type, service, volume_expansion};
    let entries: Vec<(&str, String)> = r
        .capabilities
        .iter()
        .map(|cap| match &cap.r#type {
            Some(Type::Service(s)) => (
                "service",
                enum_name(s.r#type, |t: service::Type| t.as_str_name()),
            ),
            Some(Type::VolumeExpansion(v)) => (
                "volume_expansion",
                enum_name(v.r#type, |t: volume_expansion::Type| t.as_str_name()),
            ),
            None => ("unset", String::new()),
        })
        .collect();
    Rendered {
        json: json!({
            "capabilities": entries.iter().map(|(kind, name)| {
                if *kind == "unset" { json!({}) } else { json!({ *kind: name }) }
            }).collect::<Vec<_>>(),
        }),
        human: capability_table(&entries),
    }
}

fn capability_table(entries: &[(&str, String)]) -> String {
    if entries.is_empty() {
        return "no capabilities\n".to_owned();
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|(kind, name)| vec![kind.replace('_', " "), name.clone()])
        .collect();
    table(&["TYPE", "CAPABILITY"], &rows)
}

/// ControllerGetCapabilities.
pub fn controller_capabilities(r: &ControllerGetCapabilitiesResponse) -> Rendered {
    use controller_service_capability::{Type, rpc};
    let entries: Vec<(&str, String)> = r
        .capabilities
        .iter()
        .map(|cap| match &cap.r#type {
            Some(Type::Rpc(r)) => ("rpc", enum_name(r.r#type, |t: rpc::Type| t.as_str_name())),
            None => ("unset", String::new()),
        })
        .collect();
    rpc_capabilities(&entries)
}

/// NodeGetCapabilities.
pub fn node_capabilities(r: &NodeGetCapabilitiesResponse) -> Rendered {
    use node_service_capability::{Type, rpc};
    let entries: Vec<(&str, String)> = r
        .capabilities
        .iter()
        .map(|cap| match &cap.r#type {
            Some(Type::Rpc(r)) => ("rpc", enum_name(r.r#type, |t: rpc::Type| t.as_str_name())),
            None => ("unset", String::new()),
        })
        .collect();
    rpc_capabilities(&entries)
}

fn rpc_capabilities(entries: &[(&str, String)]) -> Rendered {
    Rendered {
        json: json!({
            "capabilities": entries.iter().map(|(kind, name)| {
                if *kind == "unset" { json!({}) } else { json!({ *kind: name }) }
            }).collect::<Vec<_>>(),
        }),
        human: if entries.is_empty() {
            "no capabilities\n".to_owned()
        } else {
            entries
                .iter()
                .map(|(_, name)| format!("{name}\n"))
                .collect()
        },
    }
}

/// CreateVolume.
pub fn created_volume(volume: Option<&Volume>) -> Rendered {
    let Some(volume) = volume else {
        return Rendered {
            json: json!({ "volume": null }),
            human: "created, but the plugin returned no volume\n".to_owned(),
        };
    };
    Rendered {
        json: json!({ "volume": volume_json(volume) }),
        human: fields(&volume_fields(volume)),
    }
}

/// One ListVolumes entry as JSON.
pub fn volume_entry_json(entry: &list_volumes_response::Entry) -> Value {
    json!({
        "volume": entry.volume.as_ref().map_or(Value::Null, volume_json),
        "status": entry.status.as_ref().map_or(Value::Null, |s| json!({
            "published_node_ids": s.published_node_ids,
            "volume_condition": condition_json(s.volume_condition.as_ref()),
        })),
    })
}

/// ListVolumes, one page or all of them.
pub fn volume_list(entries: &[list_volumes_response::Entry], next_token: &str) -> Rendered {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|entry| {
            let volume = entry.volume.clone().unwrap_or_default();
            let status = entry.status.as_ref();
            vec![
                volume.volume_id.clone(),
                if volume.capacity_bytes > 0 {
                    format_size(volume.capacity_bytes)
                } else {
                    "-".to_owned()
                },
                dash_if_empty(content_source_text(volume.content_source.as_ref())),
                dash_if_empty(status.map_or(String::new(), |s| s.published_node_ids.join(","))),
                dash_if_empty(condition_text(
                    status.and_then(|s| s.volume_condition.as_ref()),
                )),
            ]
        })
        .collect();
    let mut human = if rows.is_empty() {
        "no volumes\n".to_owned()
    } else {
        table(
            &["VOLUME ID", "CAPACITY", "SOURCE", "NODES", "CONDITION"],
            &rows,
        )
    };
    push_next_token(&mut human, next_token);
    Rendered {
        json: json!({
            "entries": entries.iter().map(volume_entry_json).collect::<Vec<_>>(),
            "next_token": next_token,
        }),
        human,
    }
}

fn push_next_token(human: &mut String, next_token: &str) {
    if !next_token.is_empty() {
        human.push_str(&format!(
            "more entries: --starting-token {next_token} (or --all)\n"
        ));
    }
}

fn dash_if_empty(text: String) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text
    }
}

/// ControllerGetVolume.
pub fn got_volume(r: &ControllerGetVolumeResponse) -> Rendered {
    let volume = r.volume.clone().unwrap_or_default();
    let mut lines = volume_fields(&volume);
    if let Some(status) = &r.status {
        lines.push(("published on", status.published_node_ids.join(", ")));
        lines.push((
            "condition",
            condition_text(status.volume_condition.as_ref()),
        ));
    }
    Rendered {
        json: json!({
            "volume": r.volume.as_ref().map_or(Value::Null, volume_json),
            "status": r.status.as_ref().map_or(Value::Null, |s| json!({
                "published_node_ids": s.published_node_ids,
                "volume_condition": condition_json(s.volume_condition.as_ref()),
            })),
        }),
        human: fields(&lines),
    }
}

/// ControllerExpandVolume.
pub fn expanded(volume_id: &str, r: &ControllerExpandVolumeResponse) -> Rendered {
    Rendered {
        json: json!({
            "capacity_bytes": r.capacity_bytes,
            "node_expansion_required": r.node_expansion_required,
        }),
        human: fields(&[
            ("volume id", volume_id.to_owned()),
            ("capacity", bytes_text(r.capacity_bytes)),
            (
                "node expansion",
                if r.node_expansion_required {
                    "required"
                } else {
                    "not required"
                }
                .to_owned(),
            ),
        ]),
    }
}

fn capability_json(cap: &VolumeCapability) -> Value {
    use volume_capability::{AccessType, access_mode::Mode};
    let mode = cap.access_mode.map_or(Value::Null, |m| {
        Value::String(enum_name(m.mode, |t: Mode| t.as_str_name()))
    });
    let access_type = match &cap.access_type {
        Some(AccessType::Mount(m)) => json!({ "mount": {
            "fs_type": m.fs_type,
            "mount_flags": m.mount_flags,
            "volume_mount_group": m.volume_mount_group,
        }}),
        Some(AccessType::Block(_)) => json!({ "block": {} }),
        None => Value::Null,
    };
    json!({ "access_mode": { "mode": mode }, "access_type": access_type })
}

fn capability_text(cap: &VolumeCapability) -> String {
    use volume_capability::{AccessType, access_mode::Mode};
    let mode = cap.access_mode.map_or("-".to_owned(), |m| {
        enum_name(m.mode, |t: Mode| t.as_str_name())
    });
    match &cap.access_type {
        Some(AccessType::Mount(m)) => {
            let mut text = format!("{mode} mount");
            if !m.fs_type.is_empty() {
                text.push_str(&format!(" fs={}", m.fs_type));
            }
            if !m.mount_flags.is_empty() {
                text.push_str(&format!(" flags={}", m.mount_flags.join(",")));
            }
            text
        }
        Some(AccessType::Block(_)) => format!("{mode} block"),
        None => mode,
    }
}

/// ValidateVolumeCapabilities; the bool says whether they were confirmed.
pub fn validated(r: &ValidateVolumeCapabilitiesResponse) -> (Rendered, bool) {
    let json = json!({
        "confirmed": r.confirmed.as_ref().map_or(Value::Null, |c| json!({
            "volume_context": map_json(&c.volume_context),
            "volume_capabilities": c.volume_capabilities.iter().map(capability_json).collect::<Vec<_>>(),
            "parameters": map_json(&c.parameters),
            "mutable_parameters": map_json(&c.mutable_parameters),
        })),
        "message": r.message,
    });
    let human = match &r.confirmed {
        Some(c) => fields(&[
            (
                "confirmed",
                c.volume_capabilities
                    .iter()
                    .map(capability_text)
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            ("message", r.message.clone()),
        ]),
        None if r.message.is_empty() => "not confirmed\n".to_owned(),
        None => format!("not confirmed: {}\n", r.message),
    };
    (Rendered { json, human }, r.confirmed.is_some())
}

/// GetCapacity.
pub fn capacity(r: &GetCapacityResponse) -> Rendered {
    Rendered {
        json: json!({
            "available_capacity": r.available_capacity,
            "maximum_volume_size": r.maximum_volume_size,
            "minimum_volume_size": r.minimum_volume_size,
        }),
        human: fields(&[
            ("available", bytes_text(r.available_capacity)),
            (
                "maximum volume",
                r.maximum_volume_size.map(bytes_text).unwrap_or_default(),
            ),
            (
                "minimum volume",
                r.minimum_volume_size.map(bytes_text).unwrap_or_default(),
            ),
        ]),
    }
}

/// NodeGetInfo.
pub fn node_info(r: &NodeGetInfoResponse) -> Rendered {
    Rendered {
        json: json!({
            "node_id": r.node_id,
            "max_volumes_per_node": r.max_volumes_per_node,
            "accessible_topology": r.accessible_topology.as_ref().map_or(Value::Null, topology_json),
        }),
        human: fields(&[
            ("node id", r.node_id.clone()),
            (
                "max volumes",
                if r.max_volumes_per_node > 0 {
                    r.max_volumes_per_node.to_string()
                } else {
                    "unlimited".to_owned()
                },
            ),
            (
                "topology",
                r.accessible_topology
                    .as_ref()
                    .map(topology_text)
                    .unwrap_or_default(),
            ),
        ]),
    }
}

/// NodeGetVolumeStats.
pub fn volume_stats(r: &NodeGetVolumeStatsResponse) -> Rendered {
    use volume_usage::Unit;
    let rows: Vec<Vec<String>> = r
        .usage
        .iter()
        .map(|u| {
            let unit = enum_name(u.unit, |t: Unit| t.as_str_name());
            let amount = |n: i64| {
                if u.unit == Unit::Bytes as i32 {
                    format_size(n)
                } else {
                    n.to_string()
                }
            };
            vec![unit, amount(u.total), amount(u.used), amount(u.available)]
        })
        .collect();
    let mut human = if rows.is_empty() {
        "no usage reported\n".to_owned()
    } else {
        table(&["UNIT", "TOTAL", "USED", "AVAILABLE"], &rows)
    };
    let condition = condition_text(r.volume_condition.as_ref());
    if !condition.is_empty() {
        human.push_str(&format!("condition: {condition}\n"));
    }
    Rendered {
        json: json!({
            "usage": r.usage.iter().map(|u| json!({
                "available": u.available,
                "total": u.total,
                "used": u.used,
                "unit": enum_name(u.unit, |t: Unit| t.as_str_name()),
            })).collect::<Vec<_>>(),
            "volume_condition": condition_json(r.volume_condition.as_ref()),
        }),
        human,
    }
}

/// A snapshot as JSON.
pub fn snapshot_json(s: &Snapshot) -> Value {
    json!({
        "snapshot_id": s.snapshot_id,
        "source_volume_id": s.source_volume_id,
        "size_bytes": s.size_bytes,
        "creation_time": s.creation_time.as_ref().map(|t| rfc3339(t.seconds, t.nanos)),
        "ready_to_use": s.ready_to_use,
        "group_snapshot_id": s.group_snapshot_id,
    })
}

/// One snapshot (CreateSnapshot, GetSnapshot, `snapshot wait`).
pub fn snapshot(s: Option<&Snapshot>) -> Rendered {
    let Some(s) = s else {
        return Rendered {
            json: json!({ "snapshot": null }),
            human: "the plugin returned no snapshot\n".to_owned(),
        };
    };
    Rendered {
        json: json!({ "snapshot": snapshot_json(s) }),
        human: fields(&[
            ("snapshot id", s.snapshot_id.clone()),
            ("source volume", s.source_volume_id.clone()),
            (
                "size",
                if s.size_bytes > 0 {
                    bytes_text(s.size_bytes)
                } else {
                    "unspecified".to_owned()
                },
            ),
            (
                "created",
                s.creation_time
                    .as_ref()
                    .map(|t| rfc3339(t.seconds, t.nanos))
                    .unwrap_or_default(),
            ),
            (
                "ready",
                if s.ready_to_use { "yes" } else { "no" }.to_owned(),
            ),
            ("group snapshot", s.group_snapshot_id.clone()),
        ]),
    }
}

/// ListSnapshots, one page or all of them.
pub fn snapshot_list(entries: &[list_snapshots_response::Entry], next_token: &str) -> Rendered {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|entry| {
            let s = entry.snapshot.clone().unwrap_or_default();
            vec![
                s.snapshot_id.clone(),
                s.source_volume_id.clone(),
                if s.size_bytes > 0 {
                    format_size(s.size_bytes)
                } else {
                    "-".to_owned()
                },
                s.creation_time
                    .as_ref()
                    .map_or("-".to_owned(), |t| rfc3339(t.seconds, 0)),
                if s.ready_to_use { "yes" } else { "no" }.to_owned(),
            ]
        })
        .collect();
    let mut human = if rows.is_empty() {
        "no snapshots\n".to_owned()
    } else {
        table(
            &["SNAPSHOT ID", "SOURCE VOLUME", "SIZE", "CREATED", "READY"],
            &rows,
        )
    };
    push_next_token(&mut human, next_token);
    Rendered {
        json: json!({
            "entries": entries.iter().map(|e| json!({
                "snapshot": e.snapshot.as_ref().map_or(Value::Null, snapshot_json),
            })).collect::<Vec<_>>(),
            "next_token": next_token,
        }),
        human,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_adapter::proto::csi::v1::{
        ControllerServiceCapability, PluginCapability, VolumeUsage,
        list_volumes_response::{Entry, VolumeStatus},
    };
    use proptest::prelude::*;

    fn volume(id: &str, bytes: i64) -> Volume {
        Volume {
            capacity_bytes: bytes,
            volume_id: id.to_owned(),
            volume_context: HashMap::from([("b".into(), "2".into()), ("a".into(), "1".into())]),
            content_source: Some(VolumeContentSource {
                r#type: Some(volume_content_source::Type::Snapshot(
                    volume_content_source::SnapshotSource {
                        snapshot_id: "snap-9".into(),
                    },
                )),
            }),
            accessible_topology: vec![Topology {
                segments: HashMap::from([("zone".into(), "z1".into())]),
            }],
        }
    }

    #[test]
    fn created_volume_text_lists_sorted_context_and_source() {
        let r = created_volume(Some(&volume("exa1:/v", 10 << 30)));
        assert_eq!(
            r.human,
            "volume id  exa1:/v\n\
             capacity   10Gi (10737418240 bytes)\n\
             source     snapshot snap-9\n\
             topology   zone=z1\n\
             context    a=1\n           b=2\n"
        );
        assert_eq!(r.json["volume"]["capacity_bytes"], 10_i64 << 30);
        assert_eq!(
            r.json["volume"]["content_source"]["snapshot"]["snapshot_id"],
            "snap-9"
        );
        assert_eq!(
            r.json["volume"]["accessible_topology"][0]["segments"]["zone"],
            "z1"
        );
    }

    #[test]
    fn volume_list_is_a_table_with_dashes_for_unknowns_and_a_paging_hint() {
        let entries = vec![
            Entry {
                volume: Some(volume("v-long-id", 1 << 30)),
                status: Some(VolumeStatus {
                    published_node_ids: vec!["n1".into(), "n2".into()],
                    volume_condition: Some(VolumeCondition {
                        abnormal: true,
                        message: "gone".into(),
                    }),
                }),
            },
            Entry {
                volume: Some(Volume {
                    volume_id: "v2".into(),
                    ..Default::default()
                }),
                status: None,
            },
        ];
        let r = volume_list(&entries, "tok");
        let lines: Vec<&str> = r.human.lines().collect();
        assert_eq!(
            lines[0],
            "VOLUME ID  CAPACITY  SOURCE           NODES  CONDITION"
        );
        assert_eq!(
            lines[1],
            "v-long-id  1Gi       snapshot snap-9  n1,n2  abnormal: gone"
        );
        assert_eq!(lines[2], "v2         -         -                -      -");
        assert!(lines[3].contains("--starting-token tok"));
        assert_eq!(r.json["next_token"], "tok");
        assert_eq!(
            r.json["entries"][0]["status"]["published_node_ids"][1],
            "n2"
        );
        assert_eq!(r.json["entries"][1]["status"], Value::Null);
    }

    #[test]
    fn unknown_enum_numbers_print_as_numbers() {
        let r = controller_capabilities(&ControllerGetCapabilitiesResponse {
            capabilities: vec![
                ControllerServiceCapability {
                    r#type: Some(controller_service_capability::Type::Rpc(
                        controller_service_capability::Rpc { r#type: 1 },
                    )),
                },
                ControllerServiceCapability {
                    r#type: Some(controller_service_capability::Type::Rpc(
                        controller_service_capability::Rpc { r#type: 99 },
                    )),
                },
            ],
        });
        assert_eq!(r.human, "CREATE_DELETE_VOLUME\n99\n");
        assert_eq!(r.json["capabilities"][0]["rpc"], "CREATE_DELETE_VOLUME");
    }

    #[test]
    fn plugin_capabilities_name_their_kind() {
        let r = plugin_capabilities(&GetPluginCapabilitiesResponse {
            capabilities: vec![
                PluginCapability {
                    r#type: Some(plugin_capability::Type::Service(
                        plugin_capability::Service {
                            r#type: plugin_capability::service::Type::ControllerService as i32,
                        },
                    )),
                },
                PluginCapability {
                    r#type: Some(plugin_capability::Type::VolumeExpansion(
                        plugin_capability::VolumeExpansion {
                            r#type: plugin_capability::volume_expansion::Type::Online as i32,
                        },
                    )),
                },
            ],
        });
        assert_eq!(
            r.human,
            "TYPE              CAPABILITY\nservice           CONTROLLER_SERVICE\nvolume expansion  ONLINE\n"
        );
        assert_eq!(r.json["capabilities"][1]["volume_expansion"], "ONLINE");
    }

    #[test]
    fn probe_distinguishes_unset_from_false() {
        assert_eq!(
            probe(&ProbeResponse { ready: Some(false) }).human,
            "not ready\n"
        );
        assert_eq!(
            probe(&ProbeResponse { ready: None }).json["ready"],
            Value::Null
        );
    }

    #[test]
    fn stats_print_bytes_as_sizes_and_inodes_as_counts() {
        let r = volume_stats(&NodeGetVolumeStatsResponse {
            usage: vec![
                VolumeUsage {
                    available: 3 << 30,
                    total: 4 << 30,
                    used: 1 << 30,
                    unit: volume_usage::Unit::Bytes as i32,
                },
                VolumeUsage {
                    available: 900,
                    total: 1000,
                    used: 100,
                    unit: volume_usage::Unit::Inodes as i32,
                },
            ],
            volume_condition: Some(VolumeCondition {
                abnormal: false,
                message: String::new(),
            }),
        });
        assert_eq!(
            r.human,
            "UNIT    TOTAL  USED  AVAILABLE\nBYTES   4Gi    1Gi   3Gi\nINODES  1000   100   900\ncondition: ok\n"
        );
        assert_eq!(r.json["usage"][1]["unit"], "INODES");
    }

    #[test]
    fn rfc3339_knows_the_epoch_and_leap_days() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00Z");
        // 2024-02-29 is day 19782 after the epoch.
        assert_eq!(
            rfc3339(19_782 * 86_400 + 3_661, 500_000_000),
            "2024-02-29T01:01:01.5Z"
        );
        assert_eq!(rfc3339(-1, 0), "1969-12-31T23:59:59Z");
    }

    /// Inverse of `civil_from_days` (Howard Hinnant's `days_from_civil`).
    fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let mp = if m > 2 { m - 3 } else { m + 9 };
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    proptest! {
        #[test]
        fn civil_dates_round_trip_and_stay_in_range(days in -1_000_000_i64..1_000_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assert!((1..=12).contains(&m));
            prop_assert!((1..=31).contains(&d));
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
