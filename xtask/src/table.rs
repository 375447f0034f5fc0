//! Result tables in the papers' layout: rows = methods, columns = tasks grouped by VTAB
//! group, then group means, the mean over tasks, the mean of group means, and parameters.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

/// One (task, method) result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// Task name.
    pub task: String,
    /// Group name (Natural, Specialized, Structured) or a free label.
    pub group: String,
    /// Method label.
    pub method: String,
    /// Best test accuracy over evaluations (%), the papers' protocol.
    pub best_acc: f64,
    /// Final-epoch test accuracy (%).
    pub final_acc: f64,
    /// Trainable parameters (adapter + head).
    pub trainable_params: usize,
    /// Adapter parameters (without head).
    pub adapter_params: usize,
    /// Training throughput.
    pub samples_per_sec: f64,
    /// Peak RSS (bytes) when the run ended.
    pub peak_rss_bytes: Option<u64>,
    /// Wall seconds of the run.
    pub wall_secs: f64,
    /// Why this configuration of a merging method has no exact merged form, if it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_mergeable: Option<String>,
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 }
}

/// Summary of one method's row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RowSummary {
    /// Method label.
    pub method: String,
    /// `(group, mean accuracy)` in column order.
    pub group_means: Vec<(String, f64)>,
    /// Plain mean over all tasks (VTAB "Mean").
    pub mean_of_tasks: f64,
    /// Mean of the group means.
    pub mean_of_groups: f64,
    /// Mean trainable parameters over tasks.
    pub mean_trainable_params: f64,
}

/// Builds per-method summaries; `tasks` gives column order as `(task, group)`.
pub fn summarise(cells: &[Cell], methods: &[String], tasks: &[(String, String)]) -> Vec<RowSummary> {
    let groups: Vec<String> = tasks.iter().fold(vec![], |mut g, (_, grp)| {
        if !g.contains(grp) {
            g.push(grp.clone());
        }
        g
    });
    methods
        .iter()
        .map(|m| {
            let row: Vec<&Cell> = cells.iter().filter(|c| &c.method == m).collect();
            let group_means: Vec<(String, f64)> = groups
                .iter()
                .map(|g| {
                    (g.clone(), mean(&row.iter().filter(|c| &c.group == g).map(|c| c.best_acc).collect::<Vec<_>>()))
                })
                .collect();
            RowSummary {
                method: m.clone(),
                mean_of_tasks: mean(&row.iter().map(|c| c.best_acc).collect::<Vec<_>>()),
                mean_of_groups: mean(&group_means.iter().map(|(_, v)| *v).collect::<Vec<_>>()),
                group_means,
                mean_trainable_params: mean(&row.iter().map(|c| c.trainable_params as f64).collect::<Vec<_>>()),
            }
        })
        .collect()
}

/// Markdown table in the paper's layout.
pub fn markdown(cells: &[Cell], methods: &[String], tasks: &[(String, String)]) -> String {
    let summaries = summarise(cells, methods, tasks);
    let mut out = String::new();
    let mut header = String::from("| method |");
    let mut rule = String::from("|---|");
    let mut last_group: Option<&str> = None;
    let close_group = |header: &mut String, rule: &mut String, g: &str| {
        let _ = write!(header, " **{}** |", short(g));
        rule.push_str("---|");
    };
    for (task, group) in tasks {
        if let Some(g) = last_group.filter(|g| *g != group) {
            close_group(&mut header, &mut rule, g);
        }
        let _ = write!(header, " {task} |");
        rule.push_str("---|");
        last_group = Some(group);
    }
    if let Some(g) = last_group {
        close_group(&mut header, &mut rule, g);
    }
    header.push_str(" Mean | Group mean | Params |");
    rule.push_str("---|---|---|");
    let _ = writeln!(out, "{header}\n{rule}");
    for s in &summaries {
        let mut line = format!("| {} |", s.method);
        let mut last_group: Option<&str> = None;
        let group_mean = |g: &str| s.group_means.iter().find(|(n, _)| n == g).map(|(_, v)| *v).unwrap_or(f64::NAN);
        for (task, group) in tasks {
            if let Some(g) = last_group.filter(|g| *g != group) {
                let _ = write!(line, " **{:.1}** |", group_mean(g));
            }
            let acc = cells.iter().find(|c| &c.method == &s.method && &c.task == task).map(|c| c.best_acc);
            match acc {
                Some(a) => {
                    let _ = write!(line, " {a:.1} |");
                }
                None => line.push_str(" – |"),
            }
            last_group = Some(group);
        }
        if let Some(g) = last_group {
            let _ = write!(line, " **{:.1}** |", group_mean(g));
        }
        let _ =
            write!(line, " {:.1} | {:.1} | {} |", s.mean_of_tasks, s.mean_of_groups, params(s.mean_trainable_params));
        let _ = writeln!(out, "{line}");
    }
    let mut notes: Vec<String> = vec![];
    for c in cells {
        if let Some(why) = &c.not_mergeable {
            let note = format!("{} does not merge: {why}", c.method);
            if !notes.contains(&note) {
                notes.push(note);
            }
        }
    }
    if !notes.is_empty() {
        let _ = writeln!(out, "\n{}", notes.join("\n"));
    }
    out
}

fn short(group: &str) -> &str {
    match group {
        "Natural" => "Nat",
        "Specialized" => "Spec",
        "Structured" => "Str",
        other => other,
    }
}

/// Parameters as the papers print them: millions with two decimals, or thousands below 10 k.
pub fn params(n: f64) -> String {
    if n >= 10_000.0 { format!("{:.2}M", n / 1e6) } else { format!("{:.1}K", n / 1e3) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(task: &str, group: &str, method: &str, acc: f64) -> Cell {
        Cell {
            task: task.into(),
            group: group.into(),
            method: method.into(),
            best_acc: acc,
            final_acc: acc,
            trainable_params: 100,
            adapter_params: 50,
            samples_per_sec: 1.0,
            peak_rss_bytes: None,
            wall_secs: 1.0,
            not_mergeable: None,
        }
    }

    #[test]
    fn means_follow_the_vtab_conventions() {
        let tasks = vec![
            ("a".to_string(), "Natural".to_string()),
            ("b".to_string(), "Natural".to_string()),
            ("c".to_string(), "Structured".to_string()),
        ];
        let cells = vec![
            cell("a", "Natural", "ARC", 80.0),
            cell("b", "Natural", "ARC", 60.0),
            cell("c", "Structured", "ARC", 40.0),
        ];
        let s = &summarise(&cells, &["ARC".into()], &tasks)[0];
        assert_eq!(s.group_means, vec![("Natural".into(), 70.0), ("Structured".into(), 40.0)]);
        assert!((s.mean_of_tasks - 60.0).abs() < 1e-9);
        assert!((s.mean_of_groups - 55.0).abs() < 1e-9);
        let md = markdown(&cells, &["ARC".into()], &tasks);
        assert!(md.contains("| ARC | 80.0 | 60.0 | **70.0** | 40.0 | **40.0** | 60.0 | 55.0 |"), "{md}");
        assert!(!md.contains("does not merge"));
        let mut cells = cells;
        cells[0].not_mergeable = Some("the MLP adapter sits on the residual stream".into());
        cells[1].not_mergeable = cells[0].not_mergeable.clone();
        let md = markdown(&cells, &["ARC".into()], &tasks);
        assert_eq!(md.matches("ARC does not merge: the MLP adapter sits on the residual stream").count(), 1, "{md}");
    }
}
