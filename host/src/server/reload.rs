//! Hot reload: a new version of a guest replaces the running one while it
//! serves. The `Reloader` holds what lies between a request and its
//! result: the latest request per guest and, with `--watch`, the files
//! that changed.
//!
//! 1. [`Server::reload`] (SIGHUP, or an embedder) starts a thread per guest
//!    that reads and compiles the module file: compiling takes seconds for
//!    big components, so it never runs on the loop.
//! 2. The thread posts the result back through the loop's handle.
//!    [`Server::finish_reload`] starts the new version (instantiate +
//!    `init` with the same config). If anything fails, the old version keeps
//!    running and the log says why.
//! 3. Swap: listeners now hand new connections to the new instance; the old
//!    instance keeps its connections until they close (then it is dropped:
//!    "drained"), or until the drain deadline closes what is left. In
//!    migrate mode the old version's state and connections move to the new
//!    one instead (`migrate`).

use std::collections::HashMap;
use std::thread;
use std::time::Instant;

use tracing::{debug, error, info, warn};
use wasmloop_reactor::{Interest, LoopHandle, Reactor, TimerId, Token};

use super::Server;
use super::deferred::Deferred;
use super::policy::{Policy, ReloadMode};
use super::routes::{Route, RouteKey, Routes, token};
use super::slot::{GuestKey, Program};
use super::watch::{DEBOUNCE, Watcher};
use crate::runtime::{Fault, Guest, GuestSetup, Instance, LoadError, Module};

/// What reloading needs between a request and its result, and `--watch`.
#[derive(Default)]
pub(super) struct Reloader {
    /// For the compile threads to post their results back to the loop.
    pub handle: Option<LoopHandle<Server>>,
    /// The latest reload request per guest name, so an older compile that
    /// finishes late is not swapped in over a newer one.
    requests: HashMap<String, u64>,
    /// `--watch`: module files to reload when they change.
    watcher: Option<Watcher>,
    /// Guests whose module changed, waiting for the file to go quiet.
    changed: Vec<String>,
    quiet_timer: Option<TimerId>,
    quiet_route: Option<RouteKey>,
}

impl Reloader {
    /// A new request to reload `guest`: its number.
    fn request(&mut self, guest: &str) -> u64 {
        let request = self.requests.entry(guest.to_string()).or_default();
        *request += 1;
        *request
    }

    /// Whether `request` is still the latest for `guest`.
    fn is_latest(&self, guest: &str, request: u64) -> bool {
        self.requests.get(guest) == Some(&request)
    }

    /// Module files changed: (re)arm the quiet timer; the reload happens
    /// once the files stop changing.
    fn files_changed(&mut self, reactor: &mut Reactor, routes: &mut Routes) {
        let Some(watcher) = self.watcher.as_mut() else { return };
        let changed = &mut self.changed;
        watcher.drain(|guest| {
            if !changed.iter().any(|g| g == guest) {
                changed.push(guest.to_string());
            }
        });
        if self.changed.is_empty() {
            return;
        }
        if let Some(id) = self.quiet_timer.take() {
            reactor.cancel_timer(id);
        }
        let route = *self.quiet_route.get_or_insert_with(|| routes.insert(Route::WatchQuiet));
        self.quiet_timer = Some(reactor.set_timeout(DEBOUNCE, token(route)));
    }

    /// The quiet timer fired: the guests to reload now.
    fn went_quiet(&mut self) -> Vec<String> {
        self.quiet_timer = None;
        std::mem::take(&mut self.changed)
    }
}

impl Server {
    /// Reloads the guest called `name` (every guest if `None`) from its
    /// module file. Returns at once; the outcome is logged.
    pub fn reload(&mut self, name: Option<&str>) {
        let Some(handle) = self.reloader.handle.clone() else {
            warn!("reload requested, but the server has no loop handle");
            return;
        };
        for slot in self.guests.values().filter(|s| s.draining.is_none()) {
            if name.is_some_and(|n| n != &*slot.setup.name) {
                continue;
            }
            let guest = slot.setup.name.clone();
            let Some(module) = slot.program.module() else {
                debug!(guest = &*guest, "not reloading a native handler");
                continue;
            };
            // Reloads can overlap (two SIGHUPs during one compile): only the
            // latest request's result may be swapped in.
            let request = self.reloader.request(&guest);
            let path = module.path.clone();
            let loader = self.runtime.loader();
            let handle = handle.clone();
            let spawned = thread::Builder::new().name(format!("compile-{guest}")).spawn(move || {
                let result = loader.load(&path);
                // The loop may be gone (shutdown): then nobody needs it.
                let _ = handle.post(move |server: &mut Server, reactor: &mut Reactor| {
                    server.finish_reload(reactor, &guest, request, result)
                });
            });
            if let Err(e) = spawned {
                error!(guest = &*slot.setup.name, "cannot start a compile thread: {e}");
            }
        }
    }

    /// On the loop: validate the compiled version, swap it in, drain the old.
    fn finish_reload(&mut self, reactor: &mut Reactor, name: &str, request: u64, result: Result<Module, LoadError>) {
        if !self.reloader.is_latest(name, request) {
            info!(guest = name, "a newer reload superseded this one; its result is dropped");
            return;
        }
        let Some(old) = self.current(name) else { return };
        if self.guests[old].program.module().is_none() {
            debug!(guest = name, "not reloading a native handler");
            return;
        }
        let old_version = self.guests[old].program.version().to_string();
        let keeps_running = |reason: &dyn std::fmt::Display| {
            warn!(guest = name, "reload failed, version {old_version} keeps running: {reason}");
        };
        let module = match result {
            Ok(module) => module,
            Err(e) => return keeps_running(&e),
        };
        if self.shutting_down {
            return;
        }
        let swap_started = Instant::now();
        let setup = self.guests[old].setup.clone();
        let policy = self.guests[old].policy;
        let new_version = module.version.clone();
        let origin = module.origin;
        if policy.reload == ReloadMode::Migrate && module.exports.migration.is_some() {
            match self.migrate(reactor, old, &module, &setup) {
                Migrated::Done(guest) => {
                    let new = self.install(
                        reactor,
                        old,
                        Instance::Wasm(*guest),
                        Program::Wasm(Box::new(module)),
                        setup,
                        policy,
                    );
                    let moved = self.guests[new].guest.as_ref().map_or(0, |g| g.state().connections.len());
                    let old_slot = self.guests.remove(old).expect("the old version is still there");
                    old_slot.forget(reactor, &mut self.routes);
                    info!(
                        guest = name,
                        "reloaded (version {old_version} -> {new_version}): {}, swapped in {:?}, {moved} connections migrated",
                        origin,
                        swap_started.elapsed()
                    );
                    return;
                }
                Migrated::Refused(fault) => return keeps_running(&fault),
                // The old version cannot hand over: drain it instead.
                Migrated::NotPossible => {}
            }
        }
        let guest = match Guest::start(&self.runtime, &module, &setup) {
            Ok(guest) => guest,
            Err(fault) => return keeps_running(&fault),
        };
        self.install(reactor, old, Instance::Wasm(guest), Program::Wasm(Box::new(module)), setup, policy);
        let deadline = self.config.drain_timeout;
        let slot = &mut self.guests[old];
        slot.draining = Some(Instant::now() + deadline);
        let draining = slot.guest.as_ref().map_or(0, |g| g.state().connections.len());
        reactor.set_timeout(deadline, token(slot.drain_route));
        info!(
            guest = name,
            "reloaded (version {old_version} -> {new_version}): {}, swapped in {:?}, {draining} connections draining",
            origin,
            swap_started.elapsed()
        );
        self.retire_if_drained(reactor, old);
    }

    /// Adds the new version and points the old one's listeners at it.
    fn install(
        &mut self,
        reactor: &mut Reactor,
        old: GuestKey,
        guest: Instance,
        program: Program,
        setup: GuestSetup,
        policy: Policy,
    ) -> GuestKey {
        if let Some(metrics) = &setup.metrics {
            metrics.reloads.inc();
            metrics.set_running(Some(program.version()));
        }
        let new = self.insert_slot(Some(guest), program, setup, policy);
        // Work the old version had waiting for its CPU share (fairness.rs)
        // is the new one's now: it is queued again for `new`.
        let mut waiting = Vec::new();
        for (index, listener) in self.listeners.iter_mut().enumerate().filter(|(_, l)| l.guest == old) {
            listener.guest = new;
            if std::mem::take(&mut listener.accept_postponed) {
                waiting.push(Deferred::Accept(index));
            }
        }
        // Connections and sockets that moved (migrate) now route to `new`.
        if let Some(guest) = self.guests[new].guest.as_ref() {
            let state = guest.state();
            for (c, conn) in &state.connections {
                self.routes.repoint(Token(conn.token), Route::Connection(new, c));
                if conn.read_postponed.take() {
                    waiting.push(Deferred::Read(new, c));
                }
            }
            for (k, socket) in &state.udp {
                self.routes.repoint(Token(socket.token), Route::Datagram(new, k));
                if socket.postponed.take() {
                    waiting.push(Deferred::Datagrams(new, k));
                }
            }
        }
        for work in waiting {
            self.defer(reactor, work);
        }
        self.settle(reactor, new);
        new
    }

    /// Migrate mode: the old version's snapshot, connections and timers go
    /// to a fresh instance of the new one, which `restore`s instead of
    /// `init`. If `restore` fails, everything goes back to the old version.
    fn migrate(&mut self, reactor: &mut Reactor, old: GuestKey, module: &Module, setup: &GuestSetup) -> Migrated {
        let snapshot = match self.call(reactor, old, |guest| guest.snapshot()) {
            Some(Some(snapshot)) => snapshot,
            // Cannot migrate (or the old version just trapped and is gone).
            _ => return Migrated::NotPossible,
        };
        let mut guest = match Guest::instantiate(&self.runtime, module, setup) {
            Ok(guest) => guest,
            Err(fault) => return Migrated::Refused(fault),
        };
        if self.guests[old].guest.is_none() {
            return Migrated::NotPossible;
        }
        if let Some((id, _)) = self.guests[old].armed.take() {
            reactor.cancel_timer(id);
        }
        let old_guest = self.guests[old].guest.as_mut().expect("checked above");
        guest.state_mut().take_over(old_guest.state_mut().hand_over());
        match guest.restore(setup, &snapshot) {
            Ok(()) => Migrated::Done(Box::new(guest)),
            Err(fault) => {
                old_guest.state_mut().take_over(guest.state_mut().hand_over());
                self.settle(reactor, old);
                Migrated::Refused(fault)
            }
        }
    }

    /// `--watch`: reload each guest when its module file changes.
    pub fn watch_modules(&mut self, reactor: &mut Reactor) -> std::io::Result<()> {
        let mut watcher = Watcher::new()?;
        for slot in self.guests.values() {
            if let Some(module) = slot.program.module() {
                watcher.watch(&module.path, &slot.setup.name)?;
            }
        }
        reactor.add(&watcher, token(self.routes.insert(Route::Watch)), Interest::READABLE)?;
        self.reloader.watcher = Some(watcher);
        Ok(())
    }

    /// Module files changed (`--watch`).
    pub(super) fn module_files_changed(&mut self, reactor: &mut Reactor) {
        self.reloader.files_changed(reactor, &mut self.routes);
    }

    /// The changed module files went quiet: reload their guests.
    pub(super) fn reload_changed(&mut self) {
        for name in self.reloader.went_quiet() {
            info!(guest = &*name, "module file changed: reloading");
            self.reload(Some(&name));
        }
    }

    /// The instance serving new connections for `name`.
    fn current(&self, name: &str) -> Option<GuestKey> {
        self.guests.iter().find(|(_, s)| s.draining.is_none() && &*s.setup.name == name).map(|(g, _)| g)
    }

    /// Drops a draining instance once its last connection is gone.
    pub(super) fn retire_if_drained(&mut self, reactor: &mut Reactor, g: GuestKey) {
        if !self.guests.get(g).is_some_and(|slot| slot.is_drained()) {
            return;
        }
        let slot = self.guests.remove(g).expect("checked above");
        slot.forget(reactor, &mut self.routes);
        info!(guest = &*slot.setup.name, "version {} drained", slot.program.version());
    }

    /// The drain deadline passed: close what is left of an old version.
    pub(super) fn drain_deadline(&mut self, reactor: &mut Reactor, g: GuestKey) {
        let Some(slot) = self.guests.get(g) else { return };
        let Some(guest) = slot.guest.as_ref() else { return self.retire_if_drained(reactor, g) };
        let left = guest.state().connections.len();
        warn!(
            guest = &*slot.setup.name,
            "drain deadline: closing {left} connections of version {}",
            slot.program.version()
        );
        self.close_all(reactor, g);
    }
}

enum Migrated {
    /// The new version holds the old one's connections, timers and state.
    Done(Box<Guest>),
    /// The new version's `restore` (or instantiation) failed; the old one
    /// has everything back.
    Refused(Fault),
    /// The old version has no state to hand over.
    NotPossible,
}
