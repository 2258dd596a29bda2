//! Running each command: build the request, call the plugin, render.

use std::{
    collections::HashSet,
    future::Future,
    time::{Duration, Instant},
};

use k8s_adapter::proto::csi::v1::{
    ControllerExpandVolumeRequest, ControllerGetCapabilitiesRequest, ControllerGetVolumeRequest,
    CreateSnapshotRequest, DeleteSnapshotRequest, DeleteVolumeRequest,
    GetPluginCapabilitiesRequest, GetPluginInfoRequest, GetSnapshotRequest,
    NodeGetCapabilitiesRequest, NodeGetInfoRequest, NodeGetVolumeStatsRequest,
    NodeUnpublishVolumeRequest, NodeUnstageVolumeRequest, ProbeRequest, Snapshot,
};
use tonic::{Code, Status};

use crate::{
    bundle,
    cli::{
        Cli, Command, ControllerCommand, IdentityCommand, NodeCommand, PageArgs, SnapshotCommand,
        VolumeCommand,
    },
    client::{Plugin, duration_text, unary},
    exit::{CliError, ExitStatus},
    render::{self, Rendered},
    requests::{self, PublishTarget, map_of},
};

/// What a command prints on stdout and the status it exits with.
#[derive(Debug, Clone)]
pub struct Output {
    /// The output in both forms.
    pub rendered: Rendered,
    /// The exit status (not always success: probe and validate have their own).
    pub status: ExitStatus,
}

impl From<Rendered> for Output {
    fn from(rendered: Rendered) -> Self {
        Self {
            rendered,
            status: ExitStatus::Success,
        }
    }
}

/// Most pages followed by `--all` before giving up on a plugin that never
/// stops paging.
const MAX_PAGES: usize = 10_000;

/// Runs the parsed command line.
pub async fn run(cli: &Cli) -> Result<Output, CliError> {
    let global = &cli.global;
    if let Command::SupportBundle(args) = &cli.command {
        return bundle::run(args, global).await.map(Output::from);
    }
    let plugin = Plugin::connect(&global.endpoint, global.timeout).await?;
    let t = plugin.timeout();
    match &cli.command {
        Command::Identity(cmd) => identity(&plugin, cmd).await,
        Command::Controller(ControllerCommand::Capabilities) => {
            let r = unary(
                t,
                plugin.controller().controller_get_capabilities(
                    plugin.request(ControllerGetCapabilitiesRequest {}),
                ),
            )
            .await?;
            Ok(render::controller_capabilities(&r).into())
        }
        Command::Volume(cmd) => volume(&plugin, cmd).await,
        Command::Capacity(args) => {
            let req = requests::get_capacity(args)?;
            let r = unary(t, plugin.controller().get_capacity(plugin.request(req))).await?;
            Ok(render::capacity(&r).into())
        }
        Command::Node(cmd) => node(&plugin, cmd).await,
        Command::Snapshot(cmd) => snapshot(&plugin, cmd).await,
        Command::SupportBundle(_) => unreachable!("handled before connecting"),
    }
}

async fn identity(plugin: &Plugin, cmd: &IdentityCommand) -> Result<Output, CliError> {
    let t = plugin.timeout();
    let mut client = plugin.identity();
    Ok(match cmd {
        IdentityCommand::Probe => {
            let r = unary(t, client.probe(plugin.request(ProbeRequest {}))).await?;
            Output {
                rendered: render::probe(&r),
                status: if r.ready == Some(false) {
                    ExitStatus::NotReady
                } else {
                    ExitStatus::Success
                },
            }
        }
        IdentityCommand::PluginInfo => {
            let r = unary(
                t,
                client.get_plugin_info(plugin.request(GetPluginInfoRequest {})),
            )
            .await?;
            render::plugin_info(&r).into()
        }
        IdentityCommand::Capabilities => {
            let r = unary(
                t,
                client.get_plugin_capabilities(plugin.request(GetPluginCapabilitiesRequest {})),
            )
            .await?;
            render::plugin_capabilities(&r).into()
        }
    })
}

async fn volume(plugin: &Plugin, cmd: &VolumeCommand) -> Result<Output, CliError> {
    let t = plugin.timeout();
    let mut client = plugin.controller();
    Ok(match cmd {
        VolumeCommand::Create(args) => {
            let req = requests::create_volume(args)?;
            let r = unary(t, client.create_volume(plugin.request(req))).await?;
            render::created_volume(r.volume.as_ref()).into()
        }
        VolumeCommand::Delete { volume_id, secrets } => {
            let req = DeleteVolumeRequest {
                volume_id: volume_id.clone(),
                secrets: map_of(&secrets.secrets, "--secret")?,
            };
            unary(t, client.delete_volume(plugin.request(req))).await?;
            render::done(format!("deleted volume {volume_id}")).into()
        }
        VolumeCommand::List(page) => {
            let (entries, next) = collect_pages(page, |token| {
                let mut client = plugin.controller();
                let req = plugin.request(requests::list_volumes(page.max_entries, &token));
                async move {
                    let r = unary(t, client.list_volumes(req)).await?;
                    Ok((r.entries, r.next_token))
                }
            })
            .await?;
            render::volume_list(&entries, &next).into()
        }
        VolumeCommand::Get { volume_id } => {
            let req = ControllerGetVolumeRequest {
                volume_id: volume_id.clone(),
            };
            let r = unary(t, client.controller_get_volume(plugin.request(req))).await?;
            render::got_volume(&r).into()
        }
        VolumeCommand::Expand {
            volume_id,
            size,
            limit,
            secrets,
        } => {
            let req = ControllerExpandVolumeRequest {
                volume_id: volume_id.clone(),
                capacity_range: requests::capacity_range(Some(*size), *limit),
                secrets: map_of(&secrets.secrets, "--secret")?,
                volume_capability: None,
            };
            let r = unary(t, client.controller_expand_volume(plugin.request(req))).await?;
            render::expanded(volume_id, &r).into()
        }
        VolumeCommand::Validate {
            volume_id,
            capabilities,
            context,
            params,
            secrets,
        } => {
            let req = requests::validate_volume(
                volume_id,
                capabilities,
                context,
                params,
                &secrets.secrets,
            )?;
            let r = unary(t, client.validate_volume_capabilities(plugin.request(req))).await?;
            let (rendered, confirmed) = render::validated(&r);
            Output {
                rendered,
                status: if confirmed {
                    ExitStatus::Success
                } else {
                    ExitStatus::NotConfirmed
                },
            }
        }
    })
}

async fn node(plugin: &Plugin, cmd: &NodeCommand) -> Result<Output, CliError> {
    let t = plugin.timeout();
    let mut client = plugin.node();
    Ok(match cmd {
        NodeCommand::Info => {
            let r = unary(
                t,
                client.node_get_info(plugin.request(NodeGetInfoRequest {})),
            )
            .await?;
            render::node_info(&r).into()
        }
        NodeCommand::Capabilities => {
            let r = unary(
                t,
                client.node_get_capabilities(plugin.request(NodeGetCapabilitiesRequest {})),
            )
            .await?;
            render::node_capabilities(&r).into()
        }
        NodeCommand::Stage {
            volume_id,
            staging_path,
            capability,
            contexts,
            secrets,
        } => {
            let req = requests::node_stage(
                volume_id,
                staging_path,
                capability,
                contexts,
                &secrets.secrets,
            )?;
            unary(t, client.node_stage_volume(plugin.request(req))).await?;
            render::done(format!("staged volume {volume_id} at {staging_path}")).into()
        }
        NodeCommand::Unstage {
            volume_id,
            staging_path,
        } => {
            let req = NodeUnstageVolumeRequest {
                volume_id: volume_id.clone(),
                staging_target_path: staging_path.clone(),
            };
            unary(t, client.node_unstage_volume(plugin.request(req))).await?;
            render::done(format!("unstaged volume {volume_id} from {staging_path}")).into()
        }
        NodeCommand::Publish {
            volume_id,
            staging_path,
            target_path,
            read_only,
            capability,
            contexts,
            secrets,
        } => {
            let target = PublishTarget {
                staging_path: staging_path.as_deref(),
                target_path,
                read_only: *read_only,
            };
            let req =
                requests::node_publish(volume_id, target, capability, contexts, &secrets.secrets)?;
            unary(t, client.node_publish_volume(plugin.request(req))).await?;
            let mode = if *read_only { " read-only" } else { "" };
            render::done(format!(
                "published volume {volume_id} at {target_path}{mode}"
            ))
            .into()
        }
        NodeCommand::Unpublish {
            volume_id,
            target_path,
        } => {
            let req = NodeUnpublishVolumeRequest {
                volume_id: volume_id.clone(),
                target_path: target_path.clone(),
            };
            unary(t, client.node_unpublish_volume(plugin.request(req))).await?;
            render::done(format!("unpublished volume {volume_id} from {target_path}")).into()
        }
        NodeCommand::Stats {
            volume_id,
            volume_path,
            staging_path,
        } => {
            let req = NodeGetVolumeStatsRequest {
                volume_id: volume_id.clone(),
                volume_path: volume_path.clone(),
                staging_target_path: staging_path.clone().unwrap_or_default(),
            };
            let r = unary(t, client.node_get_volume_stats(plugin.request(req))).await?;
            render::volume_stats(&r).into()
        }
    })
}

async fn snapshot(plugin: &Plugin, cmd: &SnapshotCommand) -> Result<Output, CliError> {
    let t = plugin.timeout();
    let mut client = plugin.controller();
    Ok(match cmd {
        SnapshotCommand::Create {
            name,
            source_volume,
            params,
            secrets,
        } => {
            let req = CreateSnapshotRequest {
                source_volume_id: source_volume.clone(),
                name: name.clone(),
                secrets: map_of(&secrets.secrets, "--secret")?,
                parameters: map_of(params, "--param")?,
            };
            let r = unary(t, client.create_snapshot(plugin.request(req))).await?;
            render::snapshot(r.snapshot.as_ref()).into()
        }
        SnapshotCommand::Delete {
            snapshot_id,
            secrets,
        } => {
            let req = DeleteSnapshotRequest {
                snapshot_id: snapshot_id.clone(),
                secrets: map_of(&secrets.secrets, "--secret")?,
            };
            unary(t, client.delete_snapshot(plugin.request(req))).await?;
            render::done(format!("deleted snapshot {snapshot_id}")).into()
        }
        SnapshotCommand::List {
            snapshot_id,
            source_volume,
            page,
            secrets,
        } => {
            let secrets = map_of(&secrets.secrets, "--secret")?;
            let (entries, next) = collect_pages(page, |token| {
                let mut client = plugin.controller();
                let req = plugin.request(requests::list_snapshots(
                    snapshot_id.as_deref(),
                    source_volume.as_deref(),
                    page.max_entries,
                    &token,
                    secrets.clone(),
                ));
                async move {
                    let r = unary(t, client.list_snapshots(req)).await?;
                    Ok((r.entries, r.next_token))
                }
            })
            .await?;
            render::snapshot_list(&entries, &next).into()
        }
        SnapshotCommand::Get {
            snapshot_id,
            secrets,
        } => {
            let req = GetSnapshotRequest {
                snapshot_id: snapshot_id.clone(),
                secrets: map_of(&secrets.secrets, "--secret")?,
            };
            let r = unary(t, client.get_snapshot(plugin.request(req))).await?;
            render::snapshot(r.snapshot.as_ref()).into()
        }
        SnapshotCommand::Wait {
            snapshot_id,
            interval,
        } => {
            let ready = wait_for_snapshot(plugin, snapshot_id, *interval).await?;
            render::snapshot(Some(&ready)).into()
        }
    })
}

/// Fetches one page, or with `--all` every page from the first token on.
/// A plugin handing out a token it already gave stops the walk (it would
/// never end).
pub(crate) async fn collect_pages<E, F, Fut>(
    page: &PageArgs,
    mut fetch: F,
) -> Result<(Vec<E>, String), CliError>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<(Vec<E>, String), Status>>,
{
    let mut token = page.starting_token.clone().unwrap_or_default();
    let mut entries = Vec::new();
    let mut seen = HashSet::new();
    for _ in 0..MAX_PAGES {
        let (page_entries, next) = fetch(token).await?;
        entries.extend(page_entries);
        if !page.all || next.is_empty() {
            return Ok((entries, next));
        }
        if !seen.insert(next.clone()) {
            return Err(Status::internal(format!(
                "the plugin returned next_token {next:?} twice; stopped to avoid a loop"
            ))
            .into());
        }
        token = next;
    }
    Err(Status::internal(format!("more than {MAX_PAGES} pages; stopped")).into())
}

/// Polls ListSnapshots (filtered by id) every `interval` until the snapshot
/// is ready, for at most the global timeout. Unavailable and Aborted
/// answers are retried; a snapshot that is not listed is NotFound.
async fn wait_for_snapshot(
    plugin: &Plugin,
    snapshot_id: &str,
    interval: Duration,
) -> Result<Snapshot, CliError> {
    let total = plugin.timeout();
    let deadline = Instant::now() + total;
    let mut last = String::from("not ready yet");
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(Status::deadline_exceeded(format!(
                "snapshot {snapshot_id} not ready after {}: {last}",
                duration_text(total)
            ))
            .into());
        }
        let req = requests::list_snapshots(Some(snapshot_id), None, 0, "", Default::default());
        let mut client = plugin.controller();
        match unary(
            remaining,
            client.list_snapshots(crate::client::request(req, remaining)),
        )
        .await
        {
            Ok(r) => {
                let found = r
                    .entries
                    .into_iter()
                    .filter_map(|e| e.snapshot)
                    .find(|s| s.snapshot_id == snapshot_id);
                match found {
                    None => {
                        return Err(Status::not_found(format!(
                            "snapshot {snapshot_id} is not listed by the plugin"
                        ))
                        .into());
                    }
                    Some(s) if s.ready_to_use => return Ok(s),
                    Some(_) => last = "not ready yet".to_owned(),
                }
            }
            Err(status)
                if matches!(
                    status.code(),
                    Code::Unavailable | Code::Aborted | Code::DeadlineExceeded
                ) =>
            {
                last = format!(
                    "last answer {}: {}",
                    crate::exit::code_name(status.code()),
                    status.message()
                );
            }
            Err(status) => return Err(status.into()),
        }
        let pause = interval.min(deadline.saturating_duration_since(Instant::now()));
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn page(all: bool) -> PageArgs {
        PageArgs {
            max_entries: 0,
            starting_token: None,
            all,
        }
    }

    /// The tokens a fake pager was asked for.
    type Asked = Arc<Mutex<Vec<String>>>;
    /// One page of numbers and the next token.
    type Page = std::future::Ready<Result<(Vec<u32>, String), Status>>;

    /// A fake pager over `pages`, keyed by token ("" first, then "1", "2"...).
    fn pager(pages: Vec<Vec<u32>>, loop_back: bool) -> (Asked, impl FnMut(String) -> Page) {
        let asked = Arc::new(Mutex::new(Vec::new()));
        let log = asked.clone();
        let fetch = move |token: String| {
            log.lock().unwrap().push(token.clone());
            let index: usize = if token.is_empty() {
                0
            } else {
                token.parse().unwrap()
            };
            let next = if index + 1 < pages.len() {
                (index + 1).to_string()
            } else if loop_back {
                "1".to_owned()
            } else {
                String::new()
            };
            std::future::ready(Ok((pages[index].clone(), next)))
        };
        (asked, fetch)
    }

    #[tokio::test]
    async fn all_follows_every_token_in_order() {
        let (asked, fetch) = pager(vec![vec![1, 2], vec![3], vec![4, 5]], false);
        let (entries, next) = collect_pages(&page(true), fetch).await.unwrap();
        assert_eq!(entries, [1, 2, 3, 4, 5]);
        assert_eq!(next, "");
        assert_eq!(*asked.lock().unwrap(), ["", "1", "2"]);
    }

    #[tokio::test]
    async fn without_all_one_page_and_its_next_token_come_back() {
        let (asked, fetch) = pager(vec![vec![1, 2], vec![3]], false);
        let (entries, next) = collect_pages(&page(false), fetch).await.unwrap();
        assert_eq!((entries, next.as_str()), (vec![1, 2], "1"));
        assert_eq!(asked.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_repeated_token_stops_the_walk() {
        let (_, fetch) = pager(vec![vec![1], vec![2], vec![3]], true);
        let err = collect_pages(&page(true), fetch).await.unwrap_err();
        assert!(err.line().contains("twice"), "{}", err.line());
    }
}
