use std::path::Path;
use streamtap::pipeline::config::Pipeline;

#[test]
fn probe() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/pipelines/invalid");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("plugin.wasm"), b"").unwrap();
    let mut names: Vec<_> = std::fs::read_dir(&src).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    for n in names {
        std::fs::copy(src.join(&n), dir.path().join(&n)).unwrap();
        match Pipeline::load(&dir.path().join(&n)) {
            Ok(_) => println!("{n:?}: OK"),
            Err(e) => println!("{n:?}: {e:?}"),
        }
    }
}
