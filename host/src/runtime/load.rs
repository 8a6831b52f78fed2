//! The engine, the linker, and turning a file into a component that is known
//! to fit the world, with an error that names what is wrong when it is not.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{Config, Engine};

use crate::runtime::bindings::{
    CallbacksIndices, DatagramCallbacksIndices, HttpCallbacksIndices, MigrationIndices, OutboundCallbacksIndices,
};
use crate::runtime::cache::{self, ArtifactCache, Lookup};
use crate::runtime::state::GuestState;
use crate::runtime::ticker::EpochTicker;
use crate::runtime::{imports, wasi};

/// How often the epoch ticker ticks while a callback runs; the resolution of
/// callback deadlines.
const EPOCH_PERIOD: Duration = Duration::from_millis(5);

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {}: {}", path.display(), crate::os_error::describe(error))]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{} is not a WebAssembly file (no wasm magic number)", path.display())]
    NotWasm { path: PathBuf },
    #[error(
        "{} is a core WebAssembly module, not a component: build it for wasm32-wasip2 or wrap it with `wasm-tools component new`",
        path.display()
    )]
    CoreModule { path: PathBuf },
    #[error("{} is not a valid component: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("{} imports `{import}`, which this host does not provide", path.display())]
    UnknownImport { path: PathBuf, import: String },
    #[error("{} does not implement the wasmloop:handler world: {reason}", path.display())]
    WrongWorld { path: PathBuf, reason: String },
}

/// A compiled component, linked and checked against the world.
#[derive(Clone)]
pub struct Module {
    pub(crate) pre: InstancePre<GuestState>,
    pub(crate) exports: ExportIndices,
    pub path: PathBuf,
    /// The first 12 hex digits of the file's SHA-256, naming this version
    /// in logs.
    pub version: String,
    /// Whether the code was compiled now or loaded from the cache, and how
    /// long that took.
    pub origin: Origin,
}

#[derive(Clone, Copy, Debug)]
pub enum Origin {
    Compiled(Duration),
    Cached(Duration),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Compiled(took) => write!(f, "compiled in {took:?}"),
            Origin::Cached(took) => write!(f, "loaded from the compiled cache in {took:?}"),
        }
    }
}

/// Where a component's exported interfaces are: `callbacks` always, the
/// optional ones if the guest has them.
#[derive(Clone)]
pub(crate) struct ExportIndices {
    pub callbacks: CallbacksIndices,
    pub outbound: Option<OutboundCallbacksIndices>,
    pub datagrams: Option<DatagramCallbacksIndices>,
    pub migration: Option<MigrationIndices>,
    pub http: Option<HttpCallbacksIndices>,
}

pub struct Runtime {
    pub(crate) engine: Engine,
    loader: Loader,
    pub(crate) ticker: Arc<EpochTicker>,
}

/// Compiles and links components. `Send` and cheap to clone, so a
/// background thread can compile while the loop serves.
#[derive(Clone)]
pub struct Loader {
    engine: Engine,
    linker: Arc<Linker<GuestState>>,
    cache: Option<Arc<ArtifactCache>>,
}

impl Runtime {
    pub fn new() -> anyhow::Result<Runtime> {
        let mut wasm = Config::new();
        // Concurrency support makes every synchronous call about 3x slower
        // (docs/wasmtime-notes.md); our callbacks are synchronous by design.
        wasm.concurrency_support(false);
        wasm.epoch_interruption(true);
        wasm.wasm_backtrace_max_frames(std::num::NonZeroUsize::new(32));
        let engine = Engine::new(&wasm).map_err(anyhow::Error::from)?;
        let mut linker = Linker::new(&engine);
        wasi::add_to_linker(&mut linker).map_err(anyhow::Error::from)?;
        imports::add_to_linker(&mut linker).map_err(anyhow::Error::from)?;
        let ticker = Arc::new(EpochTicker::start(engine.clone(), EPOCH_PERIOD)?);
        let loader = Loader { engine: engine.clone(), linker: Arc::new(linker), cache: None };
        Ok(Runtime { engine, loader, ticker })
    }

    /// Reads, compiles and links `path`. Compiling can take seconds for big
    /// components: on the loop thread, use [`Runtime::loader`] on another
    /// thread instead.
    pub fn load(&self, path: &Path) -> Result<Module, LoadError> {
        self.loader.load(path)
    }

    /// Keeps compiled code in `dir` (see runtime/cache.rs) from now on.
    pub fn use_cache(&mut self, dir: &Path) -> Result<(), cache::CacheError> {
        self.loader.cache = Some(Arc::new(ArtifactCache::open(dir, &self.engine)?));
        Ok(())
    }

    pub fn loader(&self) -> Loader {
        self.loader.clone()
    }

    /// The runtime for another event loop, on another thread: the same
    /// engine, linker, compiled cache and epoch ticker thread (so modules
    /// loaded by either run on both), with its own view of whether its loop
    /// is busy (runtime/ticker.rs).
    pub fn for_another_loop(&self) -> Runtime {
        Runtime {
            engine: self.engine.clone(),
            loader: self.loader.clone(),
            ticker: Arc::new(self.ticker.for_another_loop()),
        }
    }

    /// The loop is about to block: no callback runs until it wakes.
    pub fn idle(&self) {
        self.ticker.idle();
    }

    /// Epoch ticks that cover `deadline`, counting the tick in progress.
    pub(crate) fn ticks(&self, deadline: Duration) -> u64 {
        deadline.as_nanos().div_ceil(EPOCH_PERIOD.as_nanos()) as u64 + 1
    }
}

impl Loader {
    /// Reads, compiles and links `path`, checking it fits the world.
    pub fn load(&self, path: &Path) -> Result<Module, LoadError> {
        let (component, version, origin) = self.read(path)?;
        self.link(path, &component, version, origin)
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn linker(&self) -> &Linker<GuestState> {
        &self.linker
    }

    /// Reads and compiles `path` (or loads its code from the cache): a
    /// component of some world, maybe not ours. Returns its version too.
    pub(crate) fn read(&self, path: &Path) -> Result<(Component, String, Origin), LoadError> {
        let bytes = std::fs::read(path).map_err(|error| LoadError::Read { path: path.to_path_buf(), error })?;
        match bytes.get(..8) {
            Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => {
                return Err(LoadError::CoreModule { path: path.to_path_buf() });
            }
            Some([0, b'a', b's', b'm', ..]) => {}
            _ => return Err(LoadError::NotWasm { path: path.to_path_buf() }),
        }
        let digest = cache::digest(&bytes);
        let version = cache::hex(&digest[..6]);
        let (component, origin) = self.compile(path, &bytes, &digest)?;
        debug!("{}: version {version} {origin}", path.display());
        Ok((component, version, origin))
    }

    /// Links `component` against our imports and finds its exports.
    pub(crate) fn link(
        &self,
        path: &Path,
        component: &Component,
        version: String,
        origin: Origin,
    ) -> Result<Module, LoadError> {
        let path_buf = path.to_path_buf();
        let pre = self.linker.instantiate_pre(component).map_err(|e| {
            let reason = root_cause(&e);
            match between_backticks(&reason) {
                Some(import) if reason.contains("matching implementation was not found") => {
                    LoadError::UnknownImport { path: path_buf.clone(), import }
                }
                _ => LoadError::WrongWorld { path: path_buf.clone(), reason },
            }
        })?;
        let callbacks = CallbacksIndices::new(&pre)
            .map_err(|e| LoadError::WrongWorld { path: path_buf.clone(), reason: root_cause(&e) })?;
        let exports = ExportIndices {
            callbacks,
            outbound: OutboundCallbacksIndices::new(&pre).ok(),
            datagrams: DatagramCallbacksIndices::new(&pre).ok(),
            migration: MigrationIndices::new(&pre).ok(),
            http: HttpCallbacksIndices::new(&pre).ok(),
        };
        Ok(Module { pre, exports, path: path_buf, version, origin })
    }

    /// The component's code: from the cache if it holds a sound entry,
    /// else compiled (and stored for next time).
    fn compile(
        &self,
        path: &Path,
        bytes: &[u8],
        digest: &cache::ModuleDigest,
    ) -> Result<(Component, Origin), LoadError> {
        let started = Instant::now();
        if let Some(cache) = &self.cache {
            match cache.get(&self.engine, digest) {
                Lookup::Hit(component) => return Ok((component, Origin::Cached(started.elapsed()))),
                Lookup::Miss => {}
                Lookup::Rejected(reason) => warn!("compiled cache entry rejected and deleted, recompiling: {reason}"),
            }
        }
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| LoadError::Invalid { path: path.to_path_buf(), reason: root_cause(&e) })?;
        let origin = Origin::Compiled(started.elapsed());
        if let Some(cache) = &self.cache
            && let Err(e) = cache.put(digest, &component)
        {
            warn!("cannot store compiled code in {}: {}", cache.dir().display(), crate::os_error::describe(&e));
        }
        Ok((component, origin))
    }
}

pub(crate) fn root_cause(e: &wasmtime::Error) -> String {
    format!("{e:#}")
}

pub(crate) fn between_backticks(s: &str) -> Option<String> {
    let start = s.find('`')? + 1;
    let len = s[start..].find('`')?;
    Some(s[start..start + len].to_string())
}
