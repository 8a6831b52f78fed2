//! `host check MODULE`: does a component fit the `wasmloop:handler` world?
//! It lists what the component imports (and which of those this host does
//! not provide) and what it exports (and which of those the host calls),
//! and ends with a verdict: the first thing a guest author in another
//! language needs.

use std::fmt;
use std::path::{Path, PathBuf};

use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, ResourceType};

use crate::runtime::load::{LoadError, Loader, between_backticks, root_cause};

/// What `check` found.
pub struct Report {
    pub path: PathBuf,
    pub version: String,
    pub imports: Vec<(String, bool)>,
    pub exports: Vec<(String, &'static str)>,
    /// `Ok` if the host can run it; else every reason it cannot.
    pub verdict: Result<(), Vec<String>>,
}

/// Reads and compiles `path`, then checks it against the world. Errors are
/// files that are no component at all; everything else is in the report.
pub fn check(loader: &Loader, path: &Path) -> Result<Report, LoadError> {
    let (component, version, origin) = loader.read(path)?;
    let engine = loader.engine();
    let ty = component.component_type();
    let missing = missing_imports(loader, &component);
    let imports =
        ty.imports(engine).map(|(name, _)| (name.to_string(), !missing.contains(&name.to_string()))).collect();
    let exports = ty.exports(engine).map(|(name, _)| (name.to_string(), role(name))).collect();
    let mut problems: Vec<String> =
        missing.iter().map(|name| format!("it imports `{name}`, which this host does not provide")).collect();
    if problems.is_empty()
        && let Err(e) = loader.link(path, &component, version.clone(), origin)
    {
        problems.push(match e {
            LoadError::WrongWorld { reason, .. } | LoadError::Invalid { reason, .. } => reason,
            other => other.to_string(),
        });
    }
    let verdict = if problems.is_empty() { Ok(()) } else { Err(problems) };
    Ok(Report { path: path.to_path_buf(), version, imports, exports, verdict })
}

/// What the host does with an export.
fn role(name: &str) -> &'static str {
    let interface = name.split('@').next().unwrap_or(name);
    match interface {
        "wasmloop:handler/callbacks" => "required: connection, timer and lifecycle events",
        "wasmloop:handler/outbound-callbacks" => "optional: outbound connects",
        "wasmloop:handler/datagram-callbacks" => "optional: UDP datagrams",
        "wasmloop:handler/migration" => "optional: state hand-off on reload (--reload-mode migrate)",
        _ => "not used by this host",
    }
}

/// Every import the host's linker lacks. The linker reports one missing
/// import at a time, so each one found is stubbed in a copy of the linker
/// and linking is tried again.
fn missing_imports(loader: &Loader, component: &Component) -> Vec<String> {
    let engine = loader.engine();
    let ty = component.component_type();
    let mut linker = loader.linker().clone();
    let mut missing: Vec<String> = Vec::new();
    for _ in 0..=ty.imports(engine).len() {
        let Err(e) = linker.instantiate_pre(component) else { break };
        let reason = root_cause(&e);
        let Some(name) =
            between_backticks(&reason).filter(|_| reason.contains("matching implementation was not found"))
        else {
            break;
        };
        if missing.contains(&name) {
            break;
        }
        let stubbed = match ty.get_import(engine, &name).map(|i| i.ty) {
            Some(ComponentItem::ComponentInstance(instance)) => linker.instance(&name).and_then(|mut stub| {
                for (item, ext) in instance.exports(engine) {
                    match ext.ty {
                        ComponentItem::ComponentFunc(_) => stub.func_new(item, |_, _, _, _| unreachable_stub())?,
                        ComponentItem::Resource(_) => {
                            stub.resource(item, ResourceType::host::<Stub>(), |_, _| Ok(()))?
                        }
                        _ => {}
                    }
                }
                Ok(())
            }),
            Some(ComponentItem::ComponentFunc(_)) => linker.root().func_new(&name, |_, _, _, _| unreachable_stub()),
            _ => Err(wasmtime::Error::msg("not stubbable")),
        };
        missing.push(name);
        if stubbed.is_err() {
            break;
        }
    }
    missing
}

/// The stand-in for a missing import; never instantiated, never called.
struct Stub;

fn unreachable_stub() -> wasmtime::Result<()> {
    Err(wasmtime::Error::msg("a stub for a missing import was called"))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} (version {})", self.path.display(), self.version)?;
        writeln!(f, "imports:")?;
        for (name, provided) in &self.imports {
            writeln!(f, "  {} {name}", if *provided { "ok     " } else { "MISSING" })?;
        }
        writeln!(f, "exports:")?;
        for (name, role) in &self.exports {
            writeln!(f, "  {name}  ({role})")?;
        }
        match &self.verdict {
            Ok(()) => write!(f, "fits the wasmloop:handler world: `host run` can serve it"),
            Err(problems) => {
                write!(f, "does not fit the wasmloop:handler world:")?;
                for problem in problems {
                    write!(f, "\n  - {problem}")?;
                }
                Ok(())
            }
        }
    }
}
