use std::path::PathBuf;
use std::process::Command;

fn main() {
    tauri_build::build();
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        build_web_extension();
    }
}

/// Compiles `webext/trim.rs`, the web process extension, with rustc alone
/// into `$OUT_DIR/libnatter_webext.so`; `src/webext.rs` embeds it.
fn build_web_extension() {
    println!("cargo:rerun-if-changed=webext/trim.rs");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let target = std::env::var("TARGET").expect("cargo sets TARGET");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let status = Command::new(rustc)
        .args([
            "--edition",
            "2024",
            "--crate-type",
            "cdylib",
            "--crate-name",
            "natter_webext",
            "--target",
            &target,
            "-C",
            "opt-level=2",
            "-C",
            "panic=abort",
            "-C",
            "strip=symbols",
            "-o",
        ])
        .arg(out.join("libnatter_webext.so"))
        .arg("webext/trim.rs")
        .status()
        .expect("rustc runs");
    assert!(status.success(), "compiling webext/trim.rs failed");
}
