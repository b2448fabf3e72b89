//! Writes the CRD YAML generated from the Rust types into `crds/yaml/` and the
//! Helm chart. `cargo run -p dask-crds --bin crdgen`; tests fail on drift.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for dir in [root.join("crds/yaml"), root.join("charts/dask-rs/files/crds")] {
        std::fs::create_dir_all(&dir)?;
        for (file, crd) in dask_crds::all_crds() {
            std::fs::write(dir.join(file), dask_crds::to_yaml(&crd))?;
        }
        println!("wrote {}", dir.display());
    }
    Ok(())
}
