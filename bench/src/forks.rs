//! Counting the processes the plugins create, from the kernel's process events (the netlink
//! process connector, `NETLINK_CONNECTOR` / `CN_IDX_PROC`, which root may listen to).
//!
//! Every fork on the machine is reported with the parent's and the child's thread group.
//! A new process (child pid equal to child thread group) whose parent thread group is a
//! tracked process is counted under that process's label and tracked in turn, so tools a
//! tool starts count too; thread creation is not counted. A tracked process leaves the set
//! when it exits, so a recycled pid is not mistaken for it. The counts are exact unless the
//! kernel dropped events because the socket buffer overflowed, which is reported.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{BenchError, Result};

const NETLINK_CONNECTOR: libc::c_int = 11;
const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const PROC_CN_MCAST_LISTEN: u32 = 1;
const PROC_CN_MCAST_IGNORE: u32 = 2;
const PROC_EVENT_FORK: u32 = 0x0000_0001;
const PROC_EVENT_EXIT: u32 = 0x8000_0000;
/// Size of `struct nlmsghdr`.
const NLMSG_HDR: usize = 16;
/// Size of `struct cn_msg` without its payload.
const CN_MSG_HDR: usize = 20;
/// Offset of the event union in `struct proc_event` (what, cpu, timestamp_ns).
const EVENT_DATA: usize = 16;

/// One process event the bench cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcEvent {
    /// `parent_tgid` created task `child_pid` in thread group `child_tgid`.
    Fork {
        /// The creating process.
        parent_tgid: u32,
        /// The new task.
        child_pid: u32,
        /// The new task's thread group.
        child_tgid: u32,
    },
    /// Task `pid` of thread group `tgid` exited.
    Exit {
        /// The task.
        pid: u32,
        /// Its thread group.
        tgid: u32,
    },
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

/// The process events in one datagram from the connector (several netlink messages may
/// share it); anything malformed or of another kind is skipped.
pub fn parse_datagram(buf: &[u8]) -> Vec<ProcEvent> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(len) = u32_at(buf, at) {
        let len = len as usize;
        if len < NLMSG_HDR || at + len > buf.len() {
            break;
        }
        let msg = &buf[at..at + len];
        let event = NLMSG_HDR + CN_MSG_HDR;
        if u32_at(msg, NLMSG_HDR) == Some(CN_IDX_PROC) {
            let data = event + EVENT_DATA;
            match u32_at(msg, event) {
                Some(PROC_EVENT_FORK) => {
                    if let (Some(parent_tgid), Some(child_pid), Some(child_tgid)) = (
                        u32_at(msg, data + 4),
                        u32_at(msg, data + 8),
                        u32_at(msg, data + 12),
                    ) {
                        out.push(ProcEvent::Fork {
                            parent_tgid,
                            child_pid,
                            child_tgid,
                        });
                    }
                }
                Some(PROC_EVENT_EXIT) => {
                    if let (Some(pid), Some(tgid)) = (u32_at(msg, data), u32_at(msg, data + 4)) {
                        out.push(ProcEvent::Exit { pid, tgid });
                    }
                }
                _ => {}
            }
        }
        // Netlink messages are 4-byte aligned.
        at += (len + 3) & !3;
    }
    out
}

/// Which processes are followed and how many each label's processes created.
#[derive(Debug, Default)]
pub struct Tracker {
    roots: HashMap<u32, &'static str>,
    tracked: HashMap<u32, &'static str>,
    counts: HashMap<&'static str, u64>,
    /// Children of the marker parent seen so far (for [`ForkCounter::sync`]).
    marker_children: Vec<u32>,
    marker_parent: u32,
}

impl Tracker {
    /// Applies one event.
    pub fn apply(&mut self, event: ProcEvent) {
        match event {
            ProcEvent::Fork {
                parent_tgid,
                child_pid,
                child_tgid,
            } => {
                if child_pid != child_tgid {
                    return; // a thread
                }
                if parent_tgid == self.marker_parent {
                    self.marker_children.push(child_tgid);
                }
                if let Some(&label) = self.tracked.get(&parent_tgid) {
                    *self.counts.entry(label).or_default() += 1;
                    self.tracked.insert(child_tgid, label);
                }
            }
            ProcEvent::Exit { pid, tgid } => {
                if pid == tgid && !self.roots.contains_key(&tgid) {
                    self.tracked.remove(&tgid);
                }
            }
        }
    }

    /// Follows `pid` (and what it creates) under `label`.
    pub fn track(&mut self, pid: u32, label: &'static str) {
        self.roots.insert(pid, label);
        self.tracked.insert(pid, label);
    }

    /// Stops following `pid` (once it has exited, its number may be reused).
    pub fn untrack(&mut self, pid: u32) {
        self.roots.remove(&pid);
        self.tracked.remove(&pid);
    }

    /// Processes created so far under `label`.
    pub fn count(&self, label: &str) -> u64 {
        self.counts.get(label).copied().unwrap_or(0)
    }
}

struct Shared {
    tracker: Mutex<Tracker>,
    seen: Condvar,
    lost: AtomicBool,
    stop: AtomicBool,
}

/// A listener on the process connector, counting processes the tracked processes create.
pub struct ForkCounter {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    fd: Arc<OwnedFd>,
}

fn last_error(what: &str) -> BenchError {
    BenchError::Setup(format!(
        "process connector: {what}: {}",
        std::io::Error::last_os_error()
    ))
}

fn control_message(op: u32) -> Vec<u8> {
    let total = NLMSG_HDR + CN_MSG_HDR + 4;
    let mut msg = Vec::with_capacity(total);
    msg.extend_from_slice(&(total as u32).to_ne_bytes());
    msg.extend_from_slice(&(libc::NLMSG_DONE as u16).to_ne_bytes());
    msg.extend_from_slice(&0u16.to_ne_bytes()); // flags
    msg.extend_from_slice(&0u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&std::process::id().to_ne_bytes());
    msg.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
    msg.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // ack
    msg.extend_from_slice(&4u16.to_ne_bytes()); // len
    msg.extend_from_slice(&0u16.to_ne_bytes()); // flags
    msg.extend_from_slice(&op.to_ne_bytes());
    msg
}

fn send_control(fd: &OwnedFd, op: u32) -> Result<()> {
    let msg = control_message(op);
    // SAFETY: the buffer is valid for its length; the fd is an open netlink socket.
    let sent = unsafe { libc::send(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
    if sent < 0 {
        return Err(last_error("send"));
    }
    Ok(())
}

impl ForkCounter {
    /// Opens the connector and starts listening on a thread of its own.
    pub fn start() -> Result<ForkCounter> {
        // SAFETY: plain socket(2); the result is checked.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                NETLINK_CONNECTOR,
            )
        };
        if raw < 0 {
            return Err(last_error("socket"));
        }
        // SAFETY: `raw` is a fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: zeroed sockaddr_nl is valid; fields set below.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = CN_IDX_PROC;
        // SAFETY: the address is a valid sockaddr_nl of the given size.
        let bound = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if bound < 0 {
            return Err(last_error("bind"));
        }
        // A big buffer: the machine may be busy, and every fork on it is reported.
        let size: libc::c_int = 64 << 20;
        // SAFETY: the option value is a c_int of the given size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
            let timeout = libc::timeval {
                tv_sec: 0,
                tv_usec: 200_000,
            };
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        send_control(&fd, PROC_CN_MCAST_LISTEN)?;
        let shared = Arc::new(Shared {
            tracker: Mutex::new(Tracker {
                marker_parent: std::process::id(),
                ..Tracker::default()
            }),
            seen: Condvar::new(),
            lost: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let fd = Arc::new(fd);
        let thread = {
            let (shared, fd) = (shared.clone(), fd.clone());
            std::thread::Builder::new()
                .name("proc-events".into())
                .spawn(move || listen(&fd, &shared))
                .map_err(|e| BenchError::Setup(format!("starting the event thread: {e}")))?
        };
        Ok(ForkCounter {
            shared,
            thread: Some(thread),
            fd,
        })
    }

    /// Follows `pid` under `label`.
    pub fn track(&self, pid: u32, label: &'static str) {
        self.lock().track(pid, label);
    }

    /// Stops following `pid`.
    pub fn untrack(&self, pid: u32) {
        self.lock().untrack(pid);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tracker> {
        self.shared
            .tracker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until every event up to now has been applied: starts a process of its own
    /// and waits for its fork event (events arrive in order).
    pub fn sync(&self) -> Result<()> {
        let child = std::process::Command::new("true")
            .stdin(std::process::Stdio::null())
            .spawn()
            .map_err(|e| BenchError::io("start", "true", e))?;
        let pid = child.id();
        let mut child = child;
        let _ = child.wait();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut tracker = self.lock();
        loop {
            if let Some(i) = tracker.marker_children.iter().position(|&p| p == pid) {
                tracker.marker_children.drain(..=i);
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(BenchError::Setup(
                    "process connector: our own marker process was never reported".into(),
                ));
            }
            tracker = self
                .shared
                .seen
                .wait_timeout(tracker, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Processes created under `label` so far (call [`ForkCounter::sync`] first).
    pub fn count(&self, label: &str) -> u64 {
        self.lock().count(label)
    }

    /// Whether the kernel dropped events (the counts are then lower bounds).
    pub fn lost_events(&self) -> bool {
        self.shared.lost.load(Ordering::Relaxed)
    }
}

impl Drop for ForkCounter {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        let _ = send_control(&self.fd, PROC_CN_MCAST_IGNORE);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn listen(fd: &OwnedFd, shared: &Shared) {
    let mut buf = vec![0u8; 64 * 1024];
    while !shared.stop.load(Ordering::Relaxed) {
        // SAFETY: the buffer is valid for its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::ENOBUFS) => shared.lost.store(true, Ordering::Relaxed),
                Some(libc::EAGAIN) | Some(libc::EINTR) => {}
                _ => return,
            }
            continue;
        }
        let events = parse_datagram(&buf[..n as usize]);
        if events.is_empty() {
            continue;
        }
        let mut tracker = shared.tracker.lock().unwrap_or_else(|e| e.into_inner());
        for event in events {
            tracker.apply(event);
        }
        drop(tracker);
        shared.seen.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn datagram(what: u32, fields: &[u32]) -> Vec<u8> {
        let mut payload = Vec::new();
        payload.extend_from_slice(&what.to_ne_bytes());
        payload.extend_from_slice(&0u32.to_ne_bytes()); // cpu
        payload.extend_from_slice(&0u64.to_ne_bytes()); // timestamp
        for f in fields {
            payload.extend_from_slice(&f.to_ne_bytes());
        }
        let total = NLMSG_HDR + CN_MSG_HDR + payload.len();
        let mut msg = Vec::new();
        msg.extend_from_slice(&(total as u32).to_ne_bytes());
        msg.extend_from_slice(&[0u8; 12]);
        msg.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
        msg.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
        msg.extend_from_slice(&[0u8; 8]);
        msg.extend_from_slice(&(payload.len() as u16).to_ne_bytes());
        msg.extend_from_slice(&[0u8; 2]);
        msg.extend_from_slice(&payload);
        msg
    }

    #[test]
    fn fork_and_exit_events_are_decoded() {
        let fork = datagram(PROC_EVENT_FORK, &[10, 11, 12, 12]);
        assert_eq!(
            parse_datagram(&fork),
            vec![ProcEvent::Fork {
                parent_tgid: 11,
                child_pid: 12,
                child_tgid: 12
            }]
        );
        let exit = datagram(PROC_EVENT_EXIT, &[12, 12, 0, 17, 11, 11]);
        assert_eq!(
            parse_datagram(&exit),
            vec![ProcEvent::Exit { pid: 12, tgid: 12 }]
        );
        let exec = datagram(2, &[12, 12]);
        assert!(parse_datagram(&exec).is_empty());
        let mut two = fork.clone();
        two.extend_from_slice(&exit);
        assert_eq!(parse_datagram(&two).len(), 2);
    }

    #[test]
    fn descendants_count_threads_do_not_and_recycled_pids_are_forgotten() {
        let mut t = Tracker::default();
        t.track(100, "node");
        let fork = |parent, child, tgid| ProcEvent::Fork {
            parent_tgid: parent,
            child_pid: child,
            child_tgid: tgid,
        };
        t.apply(fork(100, 101, 100)); // a thread of the plugin
        t.apply(fork(100, 200, 200)); // a tool
        t.apply(fork(200, 201, 201)); // a tool's child
        t.apply(fork(999, 300, 300)); // unrelated
        assert_eq!(t.count("node"), 2);
        t.apply(ProcEvent::Exit {
            pid: 200,
            tgid: 200,
        });
        t.apply(fork(200, 400, 400)); // pid 200 recycled by an unrelated process
        assert_eq!(t.count("node"), 2);
        t.apply(ProcEvent::Exit {
            pid: 100,
            tgid: 100,
        });
        t.apply(fork(100, 500, 500)); // roots stay tracked
        assert_eq!(t.count("node"), 3);
    }

    #[test]
    fn the_connector_reports_a_process_this_test_starts() {
        let counter = match ForkCounter::start() {
            Ok(c) => c,
            Err(e) => panic!("the process connector is needed (root): {e}"),
        };
        counter.track(std::process::id(), "self");
        counter.sync().unwrap();
        let before = counter.count("self");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        counter.sync().unwrap();
        // The marker process of each sync counts too: one of the two syncs, plus `true`.
        assert_eq!(counter.count("self") - before, 2);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_datagram(&bytes);
        }
    }
}
