//! Link settings that keep the node plugin's resident memory small (docs/performance.md):
//!
//! - relative relocations packed (`-z pack-relative-relocs`, glibc 2.36 or later, which the
//!   image has): the loader reads a few kilobytes at start-up instead of about 500 KB of
//!   relocation entries, which otherwise stay resident;
//! - in release builds for x86_64 Linux, linked by rust-lld, the functions the plugin runs
//!   laid out together (`symbol-order.txt`, made by `scripts/node-symbol-order.sh`): the
//!   kernel maps code 64 KiB around each page touched, so scattered code maps most of the
//!   binary. A function missing from the list (code changed since it was made) is only
//!   placed as usual.
//!
//! `PFS_CSI_PLAIN_LINK=1` turns both off, for linkers that know neither. The static link of
//! the image's node plugin is not made here (a build script can't set `crt-static`):
//! `scripts/build-release.sh` asks for it.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=PFS_CSI_PLAIN_LINK");
    println!("cargo:rerun-if-changed=symbol-order.txt");
    if std::env::var("PFS_CSI_PLAIN_LINK").as_deref() == Ok("1") {
        return;
    }
    let target = std::env::var("TARGET").unwrap_or_default();
    if !target.ends_with("-linux-gnu") {
        return;
    }
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    if target == "x86_64-unknown-linux-gnu" && std::env::var("PROFILE").as_deref() == Ok("release")
    {
        let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
        let order = Path::new(&dir).join("symbol-order.txt");
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}
