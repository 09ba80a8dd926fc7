//! The packaging files: the systemd unit passes `systemd-analyze verify` (with the unit pointed at the binary
//! just built), and the Dockerfile builds the binary the README says it does.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_harrier");
const SYSTEMD_ANALYZE: &str = "/usr/bin/systemd-analyze";

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    assert!(
        std::path::Path::new(SYSTEMD_ANALYZE).exists(),
        "{SYSTEMD_ANALYZE} is missing: this test needs it (`apt-get install -y systemd`; .ci/run installs it)"
    );
    let unit = std::fs::read_to_string("packaging/harrier.service").unwrap();
    assert!(unit.contains("DynamicUser=yes") && unit.contains("NoNewPrivileges=yes"));
    assert!(unit.contains("ProtectSystem=strict") && unit.contains("Restart=on-failure"));
    let dir = std::env::temp_dir().join(format!("harrier-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("harrier.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/harrier", BIN)).unwrap();
    let out = Command::new(SYSTEMD_ANALYZE).arg("verify").arg(&path).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_dockerfile_builds_in_one_stage_and_runs_as_a_user_in_another() {
    let docker = std::fs::read_to_string("Dockerfile").unwrap();
    let stages = docker.lines().filter(|l| l.starts_with("FROM ")).count();
    assert_eq!(stages, 2, "a build stage and a runtime stage");
    assert!(docker.contains("cargo build --release --locked --bin harrier"));
    assert!(docker.contains("USER 10001") && docker.contains("EXPOSE 8125/udp"));
}
