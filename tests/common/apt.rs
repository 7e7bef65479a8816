//! Debian's packages for the real tools some tests drive (Prometheus, kubectl): installed
//! when missing, once for all test processes, so that the README's test command works on a
//! fresh machine. A test that needs a tool fails, never skips, when it cannot be installed.

/// Makes sure `command` is on PATH: when it is missing, installs Debian's `package`
/// (`apt-get`, as root or through sudo) under a `flock` on a file in the temp folder. The
/// error says what to install by hand.
pub fn ensure(command: &str, package: &str) -> Result<(), String> {
    let on_path = || {
        std::process::Command::new("sh")
            .args(["-c", &format!("command -v {command}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if on_path() {
        return Ok(());
    }
    let sudo = if is_root() { "" } else { "sudo " };
    let script = format!(
        "command -v {command} >/dev/null || {{ {sudo}apt-get install -y {package} || {{ {sudo}apt-get update && {sudo}apt-get install -y {package}; }}; }}"
    );
    let lock = std::env::temp_dir().join("asm-canary-apt-install.lock");
    let out = std::process::Command::new("flock")
        .arg(&lock)
        .args(["sh", "-c", &script])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .map_err(|e| format!("cannot run flock/apt-get: {e}"))?;
    if on_path() {
        return Ok(());
    }
    Err(format!(
        "{command} is not on PATH and installing Debian's package {package} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
