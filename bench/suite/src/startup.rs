//! Placeholder: being written.

use crate::Ctx;
use crate::report::Section;

pub fn run(_ctx: &Ctx) -> anyhow::Result<Vec<Section>> {
    anyhow::bail!("not written yet")
}
