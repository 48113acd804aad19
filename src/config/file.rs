//! Loading and crash-safe writing of `node.conf`.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};

use super::{ConfigError, IniDocument, NodeConfig, Param, keywords, short_hostname};

/// The file holds the cluster secret.
const FILE_MODE: u32 = 0o600;

/// An exclusive `flock` on `.<node.conf>.lock` beside the file, released when dropped.
/// Every read-modify-write of node.conf takes it (`nodemgr set/unset/edit`, the daemon's
/// join, leave and keyring changes): without it two processes that read the same version
/// would each write their own edit over the other's. A flock belongs to its open file, so
/// it also serialises threads of one process (which share the `<pid>` temp name), and the
/// kernel drops it when a holder dies. Never taken twice by one thread: that would wait on
/// itself.
struct WriteLock(#[allow(dead_code)] File);

fn write_lock(path: &Path) -> Result<WriteLock, ConfigError> {
    // The first write may be the one that creates the directory.
    let dir = parent_dir(path);
    fs::create_dir_all(dir).map_err(|e| ConfigError::io(dir, e))?;
    let lock_path = sibling(path, ".lock");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(&lock_path)
        .map_err(|e| ConfigError::io(&lock_path, e))?;
    loop {
        // SAFETY: flock on a file descriptor this function owns; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(WriteLock(file));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(ConfigError::io(&lock_path, e));
        }
    }
}

/// Reads, parses and validates `path`.
pub fn load(path: &Path) -> Result<(IniDocument, NodeConfig), ConfigError> {
    let text = fs::read_to_string(path).map_err(|e| ConfigError::io(path, e))?;
    let doc = IniDocument::parse(&text, path)?;
    let cfg = NodeConfig::from_document(&doc, path)?;
    Ok((doc, cfg))
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// `<dir>/.<file name><suffix>`
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(".");
    name.push(path.file_name().unwrap_or_else(|| "node.conf".as_ref()));
    name.push(suffix);
    parent_dir(path).join(name)
}

fn with_extension_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

fn sync_dir(dir: &Path) -> Result<(), ConfigError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ConfigError::io(dir, e))
}

/// Writes `text` to a fresh 0600 file at `tmp` and fsyncs it.
fn write_tmp(tmp: &Path, text: &str) -> Result<(), ConfigError> {
    let io = |e| ConfigError::io(tmp, e);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(tmp)
        .map_err(io)?;
    // A stale temp file keeps its old mode despite `mode()`: force it.
    f.set_permissions(fs::Permissions::from_mode(FILE_MODE))
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Keeps the current version as `<path>.bak`, atomically replacing any older
/// backup. A hard link is free and keeps the 0600 mode; copy if unsupported.
fn backup(path: &Path) -> Result<(), ConfigError> {
    if !path.exists() {
        return Ok(());
    }
    let bak = with_extension_suffix(path, ".bak");
    let bak_tmp = sibling(path, &format!(".bak.tmp.{}", std::process::id()));
    let _ = fs::remove_file(&bak_tmp);
    if fs::hard_link(path, &bak_tmp).is_err() {
        fs::copy(path, &bak_tmp).map_err(|e| ConfigError::io(&bak_tmp, e))?;
        fs::set_permissions(&bak_tmp, fs::Permissions::from_mode(FILE_MODE))
            .map_err(|e| ConfigError::io(&bak_tmp, e))?;
    }
    fs::rename(&bak_tmp, &bak).map_err(|e| {
        let _ = fs::remove_file(&bak_tmp);
        ConfigError::io(&bak, e)
    })
}

fn write_atomic_locked(path: &Path, doc: &IniDocument) -> Result<(), ConfigError> {
    let tmp = sibling(path, &format!(".tmp.{}", std::process::id()));
    let result = write_tmp(&tmp, &doc.to_string())
        .and_then(|()| backup(path))
        .and_then(|()| fs::rename(&tmp, path).map_err(|e| ConfigError::io(path, e)));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(parent_dir(path))
}

/// Replaces `path` with `doc` so that readers and crashes see either the old
/// or the new file, never a mix: temp file (0600) + fsync, `<path>.bak`
/// backup of the previous version, rename, directory fsync.
pub fn write_atomic(path: &Path, doc: &IniDocument) -> Result<(), ConfigError> {
    let _guard = write_lock(path)?;
    write_atomic_locked(path, doc)
}

/// Sets `param` (`section.key`) to `value` in the file, refusing a keyword that is not in the
/// registry and a document that would not validate. Without a file, writes the default one
/// first (as `daemon run` does), under the same lock. Returns the new configuration and
/// whether the file was created.
pub fn set_param(path: &Path, param: &str, value: &str) -> Result<(NodeConfig, bool), ConfigError> {
    let param = Param::parse(param)?;
    if let Some(unknown) = keywords::check_known(&param.section, &param.key) {
        return Err(ConfigError::UnknownParam { unknown });
    }
    let _guard = write_lock(path)?;
    let (mut doc, created) = match load(path) {
        Ok((doc, _)) => (doc, false),
        Err(e) if e.is_not_found() => (
            default_document(&short_hostname(), &try_generate_secret()?)?,
            true,
        ),
        Err(e) => return Err(e),
    };
    doc.set(&param.section, &param.key, value)?;
    let cfg = NodeConfig::from_document(&doc, path)?;
    if created {
        create_new_locked(path, &doc)?;
    } else {
        write_atomic_locked(path, &doc)?;
    }
    Ok((cfg, created))
}

/// Applies several edits at once: loads, edits, validates the result, writes it atomically.
/// Nothing is written if an edit or the validation fails.
pub fn update(
    path: &Path,
    edit: impl FnOnce(&mut IniDocument, &NodeConfig) -> Result<(), ConfigError>,
) -> Result<NodeConfig, ConfigError> {
    let _guard = write_lock(path)?;
    let (mut doc, old) = load(path)?;
    edit(&mut doc, &old)?;
    let cfg = NodeConfig::from_document(&doc, path)?;
    write_atomic_locked(path, &doc)?;
    Ok(cfg)
}

/// Value of `param` (`section.key`); `None` if unset or malformed.
pub fn get_param(doc: &IniDocument, param: &str) -> Option<String> {
    let param = Param::parse(param).ok()?;
    doc.get(&param.section, &param.key).map(str::to_string)
}

/// 32 random bytes from the OS generator, hex encoded (64 chars).
pub fn try_generate_secret() -> Result<String, ConfigError> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| ConfigError::Random)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Like [`try_generate_secret`].
///
/// # Panics
/// If the OS random generator fails: a weak fallback secret would be worse.
pub fn generate_secret() -> String {
    match try_generate_secret() {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

fn default_document(nodename: &str, secret: &str) -> Result<IniDocument, ConfigError> {
    let mut doc = IniDocument::new();
    doc.push_comment("node.conf generated by the agent on first start.");
    doc.push_comment(
        "cluster.secret must be identical on all cluster nodes; keep this file private.",
    );
    doc.push_blank();
    doc.set("node", "nodename", nodename)?;
    doc.set("cluster", "name", &default_text("cluster", "name"))?;
    doc.set("cluster", "secret", secret)?;
    doc.set("cluster", "nodes", nodename)?;
    for (section, key) in [("listener", "addr"), ("listener", "port")] {
        doc.set(section, key, &default_text(section, key))?;
    }
    Ok(doc)
}

/// A keyword's default as the registry writes it.
fn default_text(section: &str, key: &str) -> String {
    keywords::effective_value(&IniDocument::new(), section, key).unwrap_or_default()
}

/// Writes a fresh `node.conf` (creating parent directories). Fails with an
/// `AlreadyExists` I/O error if the file exists.
pub fn create_default(
    path: &Path,
    nodename: Option<&str>,
) -> Result<(IniDocument, NodeConfig), ConfigError> {
    let nodename = nodename.map_or_else(short_hostname, str::to_string);
    let doc = default_document(&nodename, &try_generate_secret()?)?;
    // Validate before touching the disk (a given nodename may be bad).
    let cfg = NodeConfig::from_document(&doc, path)?;
    let _guard = write_lock(path)?;
    create_new_locked(path, &doc)?;
    Ok((doc, cfg))
}

/// Creates `path` with `doc`, failing with an `AlreadyExists` I/O error if it exists. The
/// caller holds the write lock (which made the directory).
fn create_new_locked(path: &Path, doc: &IniDocument) -> Result<(), ConfigError> {
    let dir = parent_dir(path);
    let tmp = sibling(path, &format!(".tmp.{}", std::process::id()));
    write_tmp(&tmp, &doc.to_string())?;
    // Linking the complete temp file is an atomic create-new: no other
    // creator can be overwritten and nobody can see a half-written file.
    let linked = fs::hard_link(&tmp, path).map_err(|e| ConfigError::io(path, e));
    let _ = fs::remove_file(&tmp);
    linked?;
    sync_dir(dir)
}

/// Loads `path`, creating a default one if it does not exist. The flag tells
/// whether the file was created.
pub fn load_or_create(path: &Path) -> Result<(IniDocument, NodeConfig, bool), ConfigError> {
    match load(path) {
        Ok((doc, cfg)) => Ok((doc, cfg, false)),
        Err(e) if e.is_not_found() => match create_default(path, None) {
            Ok((doc, cfg)) => Ok((doc, cfg, true)),
            // Another process won the creation race: use its file.
            Err(e) if e.is_already_exists() => load(path).map(|(d, c)| (d, c, false)),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Unique scratch directory removed on drop (no tempfile crate).
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "cfgtest-{}-{tag}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    const V1: &str = "# first\n[cluster]\nsecret = abc\n\n[custom]\nx = 1\n";

    #[test]
    fn write_atomic_then_load() {
        let tmp = TempDir::new("atomic");
        let path = tmp.0.join("node.conf");
        let doc1 = IniDocument::parse(V1, &path).unwrap();
        write_atomic(&path, &doc1).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), V1);
        assert_eq!(mode(&path), 0o600);
        // First write: nothing to back up.
        assert!(!tmp.0.join("node.conf.bak").exists());

        let mut doc2 = doc1.clone();
        doc2.set("listener", "port", "1300").unwrap();
        write_atomic(&path, &doc2).unwrap();
        let (loaded, cfg) = load(&path).unwrap();
        assert_eq!(loaded, doc2);
        assert_eq!(fs::read_to_string(&path).unwrap(), doc2.to_string());
        assert_eq!(cfg.listener.port, 1300);
        assert_eq!(mode(&path), 0o600);
        let bak = tmp.0.join("node.conf.bak");
        assert_eq!(fs::read_to_string(&bak).unwrap(), V1);
        assert_eq!(mode(&bak), 0o600);

        // The backup follows the previous version, not the first one.
        let mut doc3 = doc2.clone();
        doc3.set("listener", "port", "1301").unwrap();
        write_atomic(&path, &doc3).unwrap();
        assert_eq!(fs::read_to_string(&bak).unwrap(), doc2.to_string());

        // No temp files left behind.
        let names: Vec<_> = fs::read_dir(&tmp.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        let mut names = names;
        names.sort();
        assert_eq!(names, [".node.conf.lock", "node.conf", "node.conf.bak"]);
    }

    #[test]
    fn write_atomic_tightens_a_stale_temp_file() {
        let tmp = TempDir::new("stale");
        let path = tmp.0.join("node.conf");
        let stale = sibling(&path, &format!(".tmp.{}", std::process::id()));
        fs::write(&stale, "junk").unwrap();
        fs::set_permissions(&stale, fs::Permissions::from_mode(0o644)).unwrap();
        write_atomic(&path, &IniDocument::parse(V1, &path).unwrap()).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(fs::read_to_string(&path).unwrap(), V1);
    }

    #[test]
    fn load_missing_file_is_not_found() {
        let tmp = TempDir::new("missing");
        let err = load(&tmp.0.join("nope.conf")).unwrap_err();
        assert!(err.is_not_found(), "{err:?}");
        assert!(err.to_string().contains("nope.conf"), "{err}");
        let err = load(&tmp.0).unwrap_err();
        assert!(
            !err.is_not_found(),
            "a directory is not 'not found': {err:?}"
        );
    }

    #[test]
    fn set_param_writes_valid_values() {
        let tmp = TempDir::new("setok");
        let path = tmp.0.join("node.conf");
        fs::write(&path, V1).unwrap();
        let (cfg, created) = set_param(&path, "listener.port", "1400").unwrap();
        assert_eq!(cfg.listener.port, 1400);
        assert!(!created);
        let (cfg, _) = set_param(&path, "node.node2.addr", "10.0.0.2").unwrap();
        assert_eq!(cfg.peers["node2"].addr.as_deref(), Some("10.0.0.2"));
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(V1), "existing text kept: {text}");
        let (doc, _) = load(&path).unwrap();
        assert_eq!(get_param(&doc, "listener.port").as_deref(), Some("1400"));
        assert_eq!(
            get_param(&doc, "node.node2.addr").as_deref(),
            Some("10.0.0.2")
        );
        assert_eq!(get_param(&doc, "listener.nope"), None);
        assert_eq!(get_param(&doc, "noport"), None);
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn set_param_invalid_value_leaves_file_untouched() {
        let tmp = TempDir::new("setbad");
        let path = tmp.0.join("node.conf");
        fs::write(&path, V1).unwrap();
        let before = fs::metadata(&path).unwrap().modified().unwrap();

        let err = set_param(&path, "listener.port", "abc").unwrap_err();
        assert!(
            err.to_string()
                .contains("listener.port: invalid value \"abc\""),
            "{err}"
        );
        assert!(matches!(err, ConfigError::Value { ref key, .. } if key == "listener.port"));
        let err = set_param(&path, "cluster.secret", "").unwrap_err();
        assert!(err.to_string().contains("cluster.secret"), "{err}");
        assert!(matches!(
            set_param(&path, "port", "1"),
            Err(ConfigError::Param { .. })
        ));
        assert!(matches!(
            set_param(&path, "listener.port", "1\n[x]"),
            Err(ConfigError::Edit { .. })
        ));
        let err = set_param(&path, "listener.prot", "1").unwrap_err();
        assert!(matches!(err, ConfigError::UnknownParam { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "listener.prot: unknown keyword; did you mean listener.port?"
        );

        assert_eq!(fs::read_to_string(&path).unwrap(), V1);
        assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), before);
        assert!(!tmp.0.join("node.conf.bak").exists());
    }

    #[test]
    fn create_default_then_load() {
        let tmp = TempDir::new("create");
        let path = tmp.0.join("etc/opensvc/node.conf");
        let (doc, cfg) = create_default(&path, Some("n1")).unwrap();
        let (loaded_doc, loaded) = load(&path).unwrap();
        assert_eq!(loaded_doc, doc);
        assert_eq!(loaded, cfg);
        assert_eq!(loaded.nodename, "n1");
        assert_eq!(loaded.cluster.name, "default");
        assert_eq!(loaded.cluster.nodes, ["n1"]);
        assert_eq!(loaded.listener.port, 1214);
        let secret = &loaded.cluster.secret;
        assert_eq!(secret.len(), 64);
        assert!(
            secret
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            "{secret}"
        );
        assert!(fs::read_to_string(&path).unwrap().starts_with("# "));
        assert_eq!(mode(&path), 0o600);

        let err = create_default(&path, Some("n2")).unwrap_err();
        assert!(err.is_already_exists(), "{err:?}");
        assert_eq!(load(&path).unwrap().1, loaded, "existing file kept");
    }

    #[test]
    fn create_default_rejects_bad_nodename_without_writing() {
        let tmp = TempDir::new("createbad");
        let path = tmp.0.join("node.conf");
        let err = create_default(&path, Some("a b")).unwrap_err();
        assert!(
            matches!(err, ConfigError::Edit { .. } | ConfigError::Value { .. }),
            "{err:?}"
        );
        assert!(!path.exists());
    }

    #[test]
    fn load_or_create_creates_once() {
        let tmp = TempDir::new("loc");
        let path = tmp.0.join("node.conf");
        let (_, cfg1, created1) = load_or_create(&path).unwrap();
        let (_, cfg2, created2) = load_or_create(&path).unwrap();
        assert!(created1);
        assert!(!created2);
        assert_eq!(cfg1, cfg2);
        assert_eq!(cfg1.nodename, short_hostname());
    }

    #[test]
    fn set_param_without_a_file_creates_the_default_one_first() {
        let tmp = TempDir::new("setnew");
        let path = tmp.0.join("etc/node.conf");
        let (cfg, created) = set_param(&path, "listener.join_rate", "5").unwrap();
        assert!(created);
        assert_eq!(cfg.listener.join_rate, 5);
        assert_eq!(cfg.cluster.secret.len(), 64, "a generated secret");
        let (doc, loaded) = load(&path).unwrap();
        assert_eq!(loaded, cfg);
        assert_eq!(doc.get("listener", "port"), Some("1214"));
        assert_eq!(doc.get("cluster", "name"), Some("default"));
        // Refused before anything is created.
        let other = tmp.0.join("other/node.conf");
        assert!(set_param(&other, "listener.join_rate", "x").is_err());
        assert!(set_param(&other, "listener.joinrate", "5").is_err());
        assert!(!other.exists());
    }

    #[test]
    fn secrets_differ() {
        let a = generate_secret();
        assert_eq!(a.len(), 64);
        assert_ne!(a, generate_secret());
    }

    /// Threads of one process, each with its own open of the lock file, lose no update.
    #[test]
    fn concurrent_set_param_keeps_every_update() {
        let tmp = TempDir::new("concurrent");
        let path = tmp.0.join("node.conf");
        fs::write(&path, V1).unwrap();
        std::thread::scope(|s| {
            for i in 0..8 {
                let path = &path;
                s.spawn(move || set_param(path, &format!("node.k{i}.addr"), "v").unwrap());
            }
        });
        let (doc, _) = load(&path).unwrap();
        for i in 0..8 {
            assert_eq!(
                get_param(&doc, &format!("node.k{i}.addr")).as_deref(),
                Some("v")
            );
        }
    }
}
