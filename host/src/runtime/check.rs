//! `host check MODULE`: does a component fit the `wasmloop:handler` world?
//! It lists what the component imports (and which of those this host does
//! not provide) and what it exports (and which of those the host calls),
//! and ends with a verdict: the first thing a guest author in another
//! language needs.

use std::fmt;
use std::path::{Path, PathBuf};

use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, ResourceType};

use std::sync::Arc;

use crate::grants::Grants;
use crate::limits::Limits;
use crate::runtime::load::{LoadError, Loader, Runtime, between_backticks, root_cause};
use crate::runtime::{Guest, GuestLimits, GuestSetup};

/// Whether the host provides an import.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Import {
    Provided,
    Missing,
    /// The search for missing imports stopped before reaching it.
    Unknown,
}

/// What `check` found.
pub struct Report {
    pub path: PathBuf,
    pub version: String,
    pub imports: Vec<(String, Import)>,
    pub exports: Vec<(String, &'static str)>,
    /// `Ok` if the host can run it; else every reason it cannot.
    pub verdict: Result<(), Vec<String>>,
}

/// Reads and compiles `path`, then checks it against the world and, if it
/// links, instantiates it once under the default limits (running only the
/// component's start functions, not `init`). Errors are files that are no
/// component at all; everything else is in the report.
pub fn check(runtime: &Runtime, path: &Path) -> Result<Report, LoadError> {
    let loader = &runtime.loader();
    let (component, version, origin) = loader.read(path)?;
    let engine = loader.engine();
    let ty = component.component_type();
    let (missing, stopped) = missing_imports(loader, &component);
    // The linker checks imports in order: those before the one the search
    // stopped at passed; those after it were never looked at.
    let mut past_stop = false;
    let imports = ty
        .imports(engine)
        .map(|(name, _)| {
            let status = if missing.iter().any(|m| m == name) {
                Import::Missing
            } else if past_stop {
                Import::Unknown
            } else {
                Import::Provided
            };
            past_stop |= stopped.as_ref().is_some_and(|(at, _)| at == name);
            (name.to_string(), status)
        })
        .collect();
    let exports = ty.exports(engine).map(|(name, _)| (name.to_string(), role(name))).collect();
    let mut problems: Vec<String> =
        missing.iter().map(|name| format!("it imports `{name}`, which this host does not provide")).collect();
    problems.extend(stopped.map(|(_, why)| format!("imports marked ? were not checked ({why})")));
    if problems.is_empty() {
        match loader.link(path, &component, version.clone(), origin) {
            Ok(module) => {
                let setup = GuestSetup {
                    name: Arc::from("check"),
                    listeners: Vec::new(),
                    config: String::new(),
                    limits: GuestLimits::from(&Limits::DEFAULT),
                    grants: Grants::default(),
                    metrics: None,
                };
                if let Err(fault) = Guest::instantiate(runtime, &module, &setup) {
                    problems.push(format!("it does not instantiate under the default limits: {}", fault.detail));
                }
            }
            Err(LoadError::WrongWorld { reason, .. } | LoadError::Invalid { reason, .. }) => problems.push(reason),
            Err(other) => problems.push(other.to_string()),
        }
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
        "wasmloop:handler/http-callbacks" => "optional: HTTP requests and WebSockets (--listen-http, --listen-ws)",
        _ => "not used by this host",
    }
}

/// Every import the host's linker lacks. The linker reports one missing
/// import at a time, so each one found is stubbed in a copy of the linker
/// and linking is tried again. If a stub cannot be made, the search stops
/// there and says why: the imports not yet reported are then unknown.
fn missing_imports(loader: &Loader, component: &Component) -> (Vec<String>, Option<(String, String)>) {
    let engine = loader.engine();
    let ty = component.component_type();
    let mut linker = loader.linker().clone();
    let mut missing: Vec<String> = Vec::new();
    let mut stubs: Vec<(ResourceType, ResourceType)> = Vec::new();
    for _ in 0..=ty.imports(engine).len() {
        let Err(e) = linker.instantiate_pre(component) else { break };
        let reason = root_cause(&e);
        let Some(name) =
            between_backticks(&reason).filter(|_| reason.contains("matching implementation was not found"))
        else {
            // Not a missing import. With none found so far, linking reports
            // it; after stubs, it may be an artefact of a stub.
            if missing.is_empty() {
                break;
            }
            let at = missing.last().cloned().unwrap_or_default();
            return (missing, Some((at, reason)));
        };
        if missing.contains(&name) {
            // Our stub for it did not fit: what follows is unknown.
            return (missing, Some((name, reason)));
        }
        let stubbed = match ty.get_import(engine, &name).map(|i| i.ty) {
            Some(ComponentItem::ComponentInstance(instance)) => linker.instance(&name).and_then(|mut stub| {
                for (item, ext) in instance.exports(engine) {
                    match ext.ty {
                        ComponentItem::ComponentFunc(_) => stub.func_new(item, |_, _, _, _| unreachable_stub())?,
                        ComponentItem::Resource(theirs) => {
                            // One host type per resource of the component:
                            // an interface that `use`s another's resource
                            // re-exports the same one.
                            let ours = match stubs.iter().find(|(t, _)| *t == theirs) {
                                Some(&(_, ours)) => ours,
                                None => {
                                    let ours = ResourceType::host_dynamic(stubs.len() as u32);
                                    stubs.push((theirs, ours));
                                    ours
                                }
                            };
                            stub.resource(item, ours, |_, _| Ok(()))?
                        }
                        _ => {}
                    }
                }
                Ok(())
            }),
            Some(ComponentItem::ComponentFunc(_)) => linker.root().func_new(&name, |_, _, _, _| unreachable_stub()),
            _ => Err(wasmtime::Error::msg("not stubbable")),
        };
        if let Err(e) = stubbed {
            missing.push(name.clone());
            let why = format!("could not look past `{name}`: {}", root_cause(&e));
            return (missing, Some((name, why)));
        }
        missing.push(name);
    }
    (missing, None)
}

fn unreachable_stub() -> wasmtime::Result<()> {
    Err(wasmtime::Error::msg("a stub for a missing import was called"))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} (version {})", self.path.display(), self.version)?;
        writeln!(f, "imports:")?;
        for (name, status) in &self.imports {
            let mark = match status {
                Import::Provided => "ok     ",
                Import::Missing => "MISSING",
                Import::Unknown => "?      ",
            };
            writeln!(f, "  {mark} {name}")?;
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
