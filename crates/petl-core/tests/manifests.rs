//! The dataset manifests in `datasets/` agree with the loaders' task tables.

use petl_core::data::fgvc::{FgvcSplit, FgvcTask};
use petl_core::data::vtab::{VtabSplit, VtabTask};

fn manifest(name: &str) -> serde_json::Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn vtab_manifest_matches_the_task_table() {
    let m = manifest("vtab-1k.json");
    let tasks = m["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), VtabTask::ALL.len());
    for (entry, task) in tasks.iter().zip(VtabTask::ALL) {
        assert_eq!(entry["folder"], task.folder());
        assert_eq!(entry["group"], format!("{:?}", task.group()));
        assert_eq!(entry["classes"], task.num_classes());
        assert_eq!(entry["splits"]["test"], task.test_size());
        assert_eq!(entry["splits"]["train800val200"], VtabSplit::Train800Val200.expected_len(task));
    }
    let total: u64 = tasks.iter().map(|t| t["classes"].as_u64().unwrap()).sum();
    assert_eq!(total, 940, "sum of the 19 VTAB-1k class counts");
}

#[test]
fn fgvc_manifest_matches_the_task_table() {
    let m = manifest("fgvc.json");
    let tasks = m["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), FgvcTask::ALL.len());
    for (entry, task) in tasks.iter().zip(FgvcTask::ALL) {
        assert_eq!(entry["name"], task.folder());
        assert_eq!(entry["classes"], task.num_classes());
        for split in [FgvcSplit::Train, FgvcSplit::Val, FgvcSplit::Test] {
            let key = split.file_name().trim_end_matches(".json");
            assert_eq!(entry["splits"][key], task.expected_len(split), "{task} {key}");
        }
    }
}
