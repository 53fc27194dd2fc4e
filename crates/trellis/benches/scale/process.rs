//! The real `trellis` processes the benchmark drives (the release binary), and what /proc says
//! about them: CPU seconds and resident memory.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The binary under test: `TRELLIS_BENCH_BIN` (scripts/bench-scale sets it to the release build),
/// else `target/release/trellis` of this workspace. A debug binary would measure the wrong thing,
/// so there is no fallback to one.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TRELLIS_BENCH_BIN") {
        return PathBuf::from(path);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("release").join("trellis")
}

/// A `trellis` child process whose output goes to a log file; killed when dropped.
pub fn spawn(args: &[String], log: &Path, env: &[(&str, &str)]) -> tokio::process::Child {
    let file = std::fs::File::create(log).expect("create the log file");
    tokio::process::Command::new(binary())
        .args(args)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(file.try_clone().expect("log file"))
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {}: {e} (build it: cargo build --release -p trellis --bin trellis)",
                binary().display()
            )
        })
}

/// A management server on free loopback ports, data in `dir` (the way the e2e tests start one).
pub struct Mgmt {
    child: tokio::process::Child,
    pub relay: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

impl Mgmt {
    pub async fn start(dir: &Path) -> Mgmt {
        use trellis_support::process::free_port;
        std::fs::create_dir_all(dir).expect("create the bench directory");
        let (api, relay, admin) = (free_port(), free_port(), free_port());
        let data_dir = dir.join("mgmt");
        let args: Vec<String> = vec![
            "mgmt".into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--api-addr".into(),
            format!("127.0.0.1:{api}"),
            "--relay-addr".into(),
            format!("127.0.0.1:{relay}"),
            "--admin-addr".into(),
            format!("127.0.0.1:{admin}"),
        ];
        let log = dir.join("mgmt.log");
        let mgmt = Mgmt {
            child: spawn(&args, &log, &[]),
            relay: format!("127.0.0.1:{relay}"),
            data_dir,
            log,
        };
        mgmt.wait_for_api().await;
        mgmt
    }

    /// The API as admin, through the client config the server writes at start.
    pub fn api(&self) -> trellis_cli::api_client::ApiClient {
        trellis_cli::api_client::ApiClient::from_config_file(&self.data_dir.join("admin.conf"))
            .expect("the admin client config")
    }

    async fn wait_for_api(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(api) = trellis_cli::api_client::ApiClient::from_config_file(&self.data_dir.join("admin.conf"))
                && let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(1), api.get("/healthz")).await
                && response.status == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("management server did not start; see {}", self.log.display());
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("the management server is running")
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// User + system CPU seconds a process has used so far (fields 14 and 15 of /proc/PID/stat).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces: count fields after its closing parenthesis.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some(ticks as f64 / per_second.max(1) as f64)
}

/// Resident memory in bytes (VmRSS of /proc/PID/status).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Why a guarded process was stopped, once one was (see [`guard_memory`]).
static STOPPED: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// The reason a guarded process was stopped in this scenario, if it was.
pub fn stopped() -> Option<String> {
    STOPPED.lock().expect("stopped lock").clone()
}

pub fn clear_stopped() {
    *STOPPED.lock().expect("stopped lock") = None;
}

/// Three quarters of the memory available now (MemAvailable of /proc/meminfo).
pub fn memory_limit() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024 / 4 * 3)
}

/// Kills `pid` when its resident memory passes `limit`: a scenario too large for this machine
/// ends with a note, instead of the kernel's OOM killer picking a process, maybe not ours.
pub fn guard_memory(pid: u32, name: &'static str, limit: u64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(rss) = rss_bytes(pid) {
            if rss > limit {
                // SAFETY: plain kill(2) of our own child.
                unsafe {
                    libc::kill(pid as i32, libc::SIGKILL);
                }
                *STOPPED.lock().expect("stopped lock") = Some(format!(
                    "the {name}'s resident memory passed {:.1} GiB (3/4 of the memory available when the scenario began): it was killed",
                    limit as f64 / (1u64 << 30) as f64
                ));
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}
