//! `deploy/revocd.toml`, the settings file.

use std::process::Command;

use crate::files::deploy_dir;

/// `deploy/revocd.toml` loads for both subcommands. revocd itself checks
/// the file (exit 64 otherwise): every key a setting of the table it is in,
/// every value one its flag accepts, so a flag renamed in the code fails
/// here. The file's settings must also be the ones in force.
#[test]
fn revocd_toml_loads_for_serve_and_agent() {
    let path = deploy_dir().join("revocd.toml");
    for subcommand in ["serve", "agent"] {
        let output = Command::new(env!("CARGO_BIN_EXE_revocd"))
            .args([subcommand, "--config"])
            .arg(&path)
            .arg("--print-config")
            .env_clear()
            .output()
            .expect("running revocd");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "revocd {subcommand} --config deploy/revocd.toml: {stderr}"
        );
        let printed = String::from_utf8(output.stdout).expect("UTF-8 output");
        let from_file = printed.matches("\n# file ").count();
        assert!(
            from_file >= 8,
            "revocd {subcommand}: {from_file} settings from deploy/revocd.toml:\n{printed}"
        );
    }
}
