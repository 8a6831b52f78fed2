//! The compiled-artifact cache: a module's native code kept on disk, so that
//! restarting or reloading an unchanged module skips compilation.
//!
//! An entry's file name is a key covering everything the code depends on:
//! the module's bytes (SHA-256) and the engine's compatibility hash
//! (wasmtime's version, its configuration, the compiler's target and flags).
//! Another wasmtime or configuration looks up other names, so an entry made
//! by one is never offered to the other; old entries are pruned, least
//! recently used first, once the directory outgrows [`MAX_BYTES`].
//!
//! Loading native code is the one place the host takes bytes from outside
//! the sandbox as code: wasmtime cannot tell whether an artifact is what it
//! compiled, which is why `Component::deserialize` is `unsafe`. So an entry
//! is used only if all of these hold, and is otherwise deleted and rebuilt:
//! - the cache directory belongs to this user and nobody else may write to
//!   it (checked when the cache is opened; otherwise there is no cache);
//! - the file starts with our magic and its own key (a renamed or swapped
//!   file is refused);
//! - the SHA-256 of its payload matches the digest in its header (a torn
//!   write or a flipped bit is refused);
//! - wasmtime accepts the payload's own header (its version and settings).
//!
//! Entries are written to a temporary file and renamed into place, so a
//! reader never sees half an entry, even with several hosts sharing the
//! directory. Not guarded against: someone who can write files as this
//! user, who could as well replace the host binary.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The directory is pruned back under this size after each store.
pub const MAX_BYTES: u64 = 1 << 30;

/// Starts every entry; the last byte is the layout version.
const MAGIC: &[u8; 16] = b"wasmloop-cwasm\0\x01";
/// Magic, key, payload digest; then the payload.
const HEADER_LEN: usize = MAGIC.len() + 32 + 32;

/// A module's SHA-256: what names its version and its cache entries.
pub type ModuleDigest = [u8; 32];

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot use {} as the compiled cache: {}", dir.display(), crate::os_error::describe(error))]
    Io { dir: PathBuf, error: io::Error },
    #[error(
        "cannot use {} as the compiled cache: {reason} (a cache others can write to could hand the host their code)",
        dir.display()
    )]
    Unsafe { dir: PathBuf, reason: String },
}

/// What a lookup found.
pub(crate) enum Lookup {
    Hit(Component),
    Miss,
    /// There was an entry, but it cannot be used; it has been deleted.
    Rejected(String),
}

pub struct ArtifactCache {
    dir: PathBuf,
    /// SHA-256 of the engine's compatibility hash: part of every key.
    engine_key: [u8; 32],
}

impl ArtifactCache {
    /// Opens (creating, mode 0700) the cache directory `dir` for `engine`.
    pub fn open(dir: &Path, engine: &Engine) -> Result<ArtifactCache, CacheError> {
        let io_error = |error| CacheError::Io { dir: dir.to_path_buf(), error };
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_error)?;
        let meta = fs::metadata(dir).map_err(io_error)?;
        let unsafe_dir = |reason: String| CacheError::Unsafe { dir: dir.to_path_buf(), reason };
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != me {
            return Err(unsafe_dir(format!("it belongs to uid {}, not to this user (uid {me})", meta.uid())));
        }
        if meta.permissions().mode() & 0o022 != 0 {
            return Err(unsafe_dir(format!(
                "its mode {:o} lets others write to it",
                meta.permissions().mode() & 0o777
            )));
        }
        let mut hasher = ShaHasher(Sha256::new());
        hasher.0.update(b"wasmloop engine key\n");
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(ArtifactCache { dir: dir.to_path_buf(), engine_key: hasher.0.finalize().into() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The entry for `module`, checked as the module doc says.
    pub(crate) fn get(&self, engine: &Engine, module: &ModuleDigest) -> Lookup {
        let key = self.key(module);
        let path = self.path(&key);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Lookup::Miss,
            Err(e) => return self.reject(&path, format!("cannot read it: {}", crate::os_error::describe(&e))),
        };
        let payload = match check_entry(&bytes, &key) {
            Ok(payload) => payload,
            Err(reason) => return self.reject(&path, reason.to_string()),
        };
        match deserialize(engine, payload) {
            Ok(component) => {
                // Recently used entries survive pruning; a failure only
                // makes this one look older.
                let _ = fs::File::open(&path).and_then(|f| f.set_modified(SystemTime::now()));
                Lookup::Hit(component)
            }
            Err(e) => self.reject(&path, format!("wasmtime refused it: {e}")),
        }
    }

    /// Stores `component`'s code for `module`, then prunes the directory.
    pub(crate) fn put(&self, module: &ModuleDigest, component: &Component) -> io::Result<()> {
        let payload = component.serialize().map_err(io::Error::other)?;
        let key = self.key(module);
        let path = self.path(&key);
        // Unique per process and call, so concurrent writers never share one.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let tmp = self.dir.join(format!(
            ".{}.{}-{}.tmp",
            hex(&key[..8]),
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| {
            let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            file.write_all(MAGIC)?;
            file.write_all(&key)?;
            file.write_all(&Sha256::digest(&payload))?;
            file.write_all(&payload)?;
            file.sync_data()?;
            fs::rename(&tmp, &path)
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written?;
        self.prune(MAX_BYTES);
        Ok(())
    }

    fn reject(&self, path: &Path, reason: String) -> Lookup {
        let _ = fs::remove_file(path);
        Lookup::Rejected(format!("{}: {reason}", path.display()))
    }

    /// Deletes the least recently used entries until the directory holds at
    /// most `max` bytes. Best effort: a file another host removed first, or
    /// one we cannot stat, is skipped.
    fn prune(&self, max: u64) {
        let Ok(dir) = fs::read_dir(&self.dir) else { return };
        let mut entries: Vec<(SystemTime, u64, PathBuf)> = dir
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), e.path()))
            })
            .collect();
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        entries.sort();
        for (_, len, path) in entries {
            if total <= max {
                break;
            }
            if fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
    }

    fn key(&self, module: &ModuleDigest) -> [u8; 32] {
        let mut sha = Sha256::new();
        sha.update(self.engine_key);
        sha.update(module);
        sha.finalize().into()
    }

    fn path(&self, key: &[u8; 32]) -> PathBuf {
        self.dir.join(format!("{}.cwasm", hex(key)))
    }
}

/// The SHA-256 of a module's bytes.
pub fn digest(bytes: &[u8]) -> ModuleDigest {
    Sha256::digest(bytes).into()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The payload of an entry, if its header is ours, names `key`, and its
/// digest matches.
fn check_entry<'a>(bytes: &'a [u8], key: &[u8; 32]) -> Result<&'a [u8], &'static str> {
    if bytes.len() < HEADER_LEN {
        return Err("truncated");
    }
    let (magic, rest) = bytes.split_at(MAGIC.len());
    let (stored_key, rest) = rest.split_at(32);
    let (stored_digest, payload) = rest.split_at(32);
    if magic != MAGIC {
        return Err("not a wasmloop cache entry of this layout");
    }
    if stored_key != key {
        return Err("it was made for another module or engine");
    }
    if Sha256::digest(payload).as_slice() != stored_digest {
        return Err("its checksum does not match: corrupt or partly written");
    }
    Ok(payload)
}

/// The one `unsafe` call outside the reactor: wasmtime has no safe way to
/// load code it compiled earlier.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, payload: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `Component::deserialize` requires bytes that
    // `Component::serialize` produced, unmodified. `payload` comes from an
    // entry in a directory only this user can write (checked in `open`),
    // written whole by `put` (temporary file + rename), and its SHA-256
    // matched the digest `put` stored beside it under the key of this very
    // module and engine (`check_entry`). It is read into memory before the
    // check, so the file changing afterwards cannot change what is loaded.
    // wasmtime itself then checks its version and configuration header.
    unsafe { Component::deserialize(engine, payload) }
}

/// Feeds `Hash` into SHA-256 so the engine's compatibility hash gives a key
/// that is stable across runs (std's hashers promise no such thing).
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// Unused: the key is the full digest, read from `self.0`.
    fn finish(&self) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAT: &str = r#"(component (core module (func (export "f"))))"#;

    fn setup() -> (tempfile::TempDir, Engine, ArtifactCache, ModuleDigest, Component) {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let cache = ArtifactCache::open(dir.path(), &engine).unwrap();
        let wasm = wat::parse_str(WAT).unwrap();
        let component = Component::new(&engine, &wasm).unwrap();
        (dir, engine, cache, digest(&wasm), component)
    }

    fn only_entry(cache: &ArtifactCache) -> PathBuf {
        let entries: Vec<PathBuf> = fs::read_dir(cache.dir()).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(entries.len(), 1, "one entry and no temporary files: {entries:?}");
        entries.into_iter().next().unwrap()
    }

    fn rejected(lookup: Lookup) -> String {
        match lookup {
            Lookup::Rejected(reason) => reason,
            Lookup::Hit(_) => panic!("a damaged entry was used"),
            Lookup::Miss => panic!("a damaged entry went unnoticed"),
        }
    }

    #[test]
    fn a_stored_entry_is_found_and_other_modules_miss() {
        let (_dir, engine, cache, module, component) = setup();
        assert!(matches!(cache.get(&engine, &module), Lookup::Miss));
        cache.put(&module, &component).unwrap();
        assert!(matches!(cache.get(&engine, &module), Lookup::Hit(_)));
        assert!(matches!(cache.get(&engine, &digest(b"another module")), Lookup::Miss));
    }

    #[test]
    fn another_engine_configuration_looks_up_another_entry() {
        let (_dir, _engine, cache, module, component) = setup();
        cache.put(&module, &component).unwrap();
        let mut config = wasmtime::Config::new();
        config.consume_fuel(true);
        let other = Engine::new(&config).unwrap();
        let other_cache = ArtifactCache::open(cache.dir(), &other).unwrap();
        assert!(matches!(other_cache.get(&other, &module), Lookup::Miss));
    }

    #[test]
    fn a_flipped_bit_is_detected_and_the_entry_deleted() {
        let (_dir, engine, cache, module, component) = setup();
        cache.put(&module, &component).unwrap();
        let path = only_entry(&cache);
        let mut bytes = fs::read(&path).unwrap();
        let middle = HEADER_LEN + (bytes.len() - HEADER_LEN) / 2;
        bytes[middle] ^= 0x10;
        fs::write(&path, &bytes).unwrap();
        let reason = rejected(cache.get(&engine, &module));
        assert!(reason.contains("checksum does not match"), "{reason}");
        assert!(!path.exists(), "the corrupt entry is deleted");
    }

    #[test]
    fn truncated_foreign_and_swapped_entries_are_refused() {
        let (_dir, engine, cache, module, component) = setup();
        cache.put(&module, &component).unwrap();
        let path = only_entry(&cache);
        let good = fs::read(&path).unwrap();

        fs::write(&path, &good[..HEADER_LEN - 1]).unwrap();
        assert!(rejected(cache.get(&engine, &module)).contains("truncated"));

        let mut foreign = good.clone();
        foreign[0] = b'W';
        fs::write(&path, &foreign).unwrap();
        assert!(rejected(cache.get(&engine, &module)).contains("not a wasmloop cache entry"));

        // Another module's entry renamed to this module's name.
        let other = digest(b"another module");
        cache.put(&other, &component).unwrap();
        let other_path = cache.path(&cache.key(&other));
        fs::rename(&other_path, &path).unwrap();
        assert!(rejected(cache.get(&engine, &module)).contains("another module or engine"));
    }

    #[test]
    fn a_valid_envelope_around_foreign_bytes_is_refused_by_wasmtime() {
        let (_dir, engine, cache, module, _component) = setup();
        let payload = b"\x7fELF but not really a wasmtime artifact".to_vec();
        let key = cache.key(&module);
        let mut entry = MAGIC.to_vec();
        entry.extend_from_slice(&key);
        entry.extend_from_slice(&Sha256::digest(&payload));
        entry.extend_from_slice(&payload);
        fs::write(cache.path(&key), entry).unwrap();
        assert!(rejected(cache.get(&engine, &module)).contains("wasmtime refused it"));
    }

    #[test]
    fn pruning_drops_the_least_recently_used_first() {
        let (_dir, engine, cache, module, component) = setup();
        let older = digest(b"older");
        cache.put(&older, &component).unwrap();
        let old_time = SystemTime::now() - std::time::Duration::from_secs(3600);
        fs::File::open(cache.path(&cache.key(&older))).unwrap().set_modified(old_time).unwrap();
        cache.put(&module, &component).unwrap();
        let one = fs::metadata(cache.path(&cache.key(&module))).unwrap().len();
        cache.prune(one);
        assert!(matches!(cache.get(&engine, &older), Lookup::Miss), "the older entry went");
        assert!(matches!(cache.get(&engine, &module), Lookup::Hit(_)), "the newer one stayed");
    }

    #[test]
    fn a_directory_others_can_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let error = ArtifactCache::open(dir.path(), &Engine::default()).err().expect("refused");
        assert!(error.to_string().contains("lets others write"), "{error}");
    }
}
