//! Relative relocations packed, as for the node plugin (see `bins/node/build.rs`): a few
//! kilobytes for the loader to read at start-up instead of about 500 KB that stay resident.
//! `PFS_CSI_PLAIN_LINK=1` turns it off.

fn main() {
    println!("cargo:rerun-if-env-changed=PFS_CSI_PLAIN_LINK");
    let plain = std::env::var("PFS_CSI_PLAIN_LINK").as_deref() == Ok("1");
    if !plain && std::env::var("TARGET").is_ok_and(|t| t.ends_with("-linux-gnu")) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
