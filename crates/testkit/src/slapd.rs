//! A real OpenLDAP `slapd` for tests: a generated `slapd.conf` (mdb database, memberof overlay, the
//! core/cosine/inetorgperson schemas found where the distribution keeps them) in a temp directory,
//! listening on a loopback ephemeral port, loaded with [`DIRECTORY`] through `ldapadd` so the
//! memberof overlay writes `memberOf` on the users, as a Gloo-style directory has it. Killed on
//! drop, its directory removed unless the test failed.
//!
//! scripts/setup installs slapd and ldap-utils (Debian packages).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SUFFIX: &str = "dc=example,dc=org";
pub const ROOT_DN: &str = "cn=admin,dc=example,dc=org";
pub const ROOT_PASSWORD: &str = "adminpwd";
pub const USER_DN_TEMPLATE: &str = "uid=%s,ou=people,dc=example,dc=org";
pub const DEVELOPERS: &str = "cn=developers,ou=groups,dc=example,dc=org";
pub const SALES: &str = "cn=sales,ou=groups,dc=example,dc=org";

/// alice and `dan,jr` (a DN that needs RFC 4514 escaping) are developers; bob is in sales only.
pub const DIRECTORY: &str = "\
dn: dc=example,dc=org
objectClass: dcObject
objectClass: organization
dc: example
o: Example

dn: ou=people,dc=example,dc=org
objectClass: organizationalUnit
ou: people

dn: ou=groups,dc=example,dc=org
objectClass: organizationalUnit
ou: groups

dn: uid=alice,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: alice
cn: Alice
sn: Liddell
userPassword: alicepwd

dn: uid=bob,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: bob
cn: Bob
sn: Builder
userPassword: bobpwd

dn: uid=dan\\2Cjr,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: dan,jr
cn: Dan Junior
sn: Junior
userPassword: danpwd

dn: cn=developers,ou=groups,dc=example,dc=org
objectClass: groupOfNames
cn: developers
member: uid=alice,ou=people,dc=example,dc=org
member: uid=dan\\2Cjr,ou=people,dc=example,dc=org

dn: cn=sales,ou=groups,dc=example,dc=org
objectClass: groupOfNames
cn: sales
member: uid=bob,ou=people,dc=example,dc=org
";

pub struct Slapd {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
}

impl Slapd {
    /// Starts slapd in `dir` (emptied first) and loads [`DIRECTORY`].
    pub async fn start(dir: &Path) -> Slapd {
        let slapd = find_program(
            "slapd",
            &["/usr/sbin/slapd", "/usr/local/sbin/slapd", "/usr/libexec/slapd"],
        );
        let ldapadd = find_program("ldapadd", &["/usr/bin/ldapadd", "/usr/local/bin/ldapadd"]);
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::write(dir.join("slapd.conf"), slapd_conf(dir)).unwrap();
        std::fs::write(dir.join("directory.ldif"), DIRECTORY).unwrap();

        let port = trellis_support::process::free_port();
        let log = std::fs::File::create(dir.join("slapd.log")).unwrap();
        // `-d 0`: stay in the foreground (so the child is slapd itself) without debug output.
        let child = Command::new(&slapd)
            .arg("-f")
            .arg(dir.join("slapd.conf"))
            .arg("-h")
            .arg(format!("ldap://127.0.0.1:{port}/"))
            .args(["-d", "0"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e} (run scripts/setup)", slapd.display()));
        let mut server = Slapd {
            child: Some(child),
            port,
            dir: dir.to_path_buf(),
        };
        server.wait_listening().await;

        // A slapd that accepts connections may not answer LDAP yet on a busy machine: the
        // first binds are retried for a few seconds.
        let deadline = Instant::now() + Duration::from_secs(10);
        let output = loop {
            let output = tokio::process::Command::new(&ldapadd)
                .args(["-x", "-H", &server.url(), "-D", ROOT_DN, "-w", ROOT_PASSWORD, "-f"])
                .arg(dir.join("directory.ldif"))
                .output()
                .await
                .unwrap_or_else(|e| panic!("cannot run {}: {e} (run scripts/setup)", ldapadd.display()));
            let unreachable = String::from_utf8_lossy(&output.stderr).contains("Can't contact LDAP server");
            if output.status.success() || !unreachable || Instant::now() >= deadline {
                break output;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert!(
            output.status.success(),
            "ldapadd failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        server
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// Kills slapd and waits until the port refuses connections.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
            assert!(Instant::now() < deadline, "slapd still accepts connections after kill");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("slapd exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "slapd did not listen within 10s: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("slapd.log")).unwrap_or_default()
    }
}

impl Drop for Slapd {
    /// Kills slapd; its directory stays when the test failed, for the log.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn slapd_conf(dir: &Path) -> String {
    let schema = find_dir(
        &[
            "/etc/ldap/schema",
            "/etc/openldap/schema",
            "/usr/local/etc/openldap/schema",
            "/opt/homebrew/etc/openldap/schema",
        ],
        "core.schema",
    )
    .unwrap_or_else(|| panic!("OpenLDAP's core.schema not found (run scripts/setup)"));
    // Debian builds the backends and overlays as modules; a build with them linked in needs no
    // moduleload lines.
    let modules = find_dir(
        &[
            "/usr/lib/ldap",
            "/usr/lib/openldap",
            "/usr/lib64/openldap",
            "/usr/libexec/openldap",
            "/usr/local/libexec/openldap",
            "/usr/lib/x86_64-linux-gnu/ldap",
            "/usr/lib/aarch64-linux-gnu/ldap",
        ],
        "back_mdb.so",
    );
    let module_lines = match modules {
        Some(path) => format!(
            "modulepath {}\nmoduleload back_mdb\nmoduleload memberof\n",
            path.display()
        ),
        None => String::new(),
    };
    let dir = dir.display();
    let schema = schema.display();
    format!(
        "include {schema}/core.schema
include {schema}/cosine.schema
include {schema}/inetorgperson.schema
pidfile {dir}/slapd.pid
argsfile {dir}/slapd.args
{module_lines}
database mdb
maxsize 16777216
suffix \"{SUFFIX}\"
rootdn \"{ROOT_DN}\"
rootpw {ROOT_PASSWORD}
directory {dir}/data
overlay memberof
# Users authenticate with their password and read only their own entry (memberOf included).
access to attrs=userPassword by anonymous auth by * none
access to * by self read by * none
"
    )
}

fn find_program(name: &str, fallbacks: &[&str]) -> PathBuf {
    if let Some(path) = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
    {
        return path;
    }
    fallbacks
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found on PATH nor in {fallbacks:?} (run scripts/setup)"))
}

fn find_dir(candidates: &[&str], containing: &str) -> Option<PathBuf> {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|dir| dir.join(containing).is_file())
}
