//! The subtask DAG: a [`Plan`] is acyclic with valid, unique names by construction.
//!
//! The operator builds one from a Task's manual `spec.subtasks` or from the planner's answer, and
//! asks it which subtasks are ready to dispatch. Its only constructor reports every problem with
//! its field path, so a bad plan is explained, never half-accepted.

use std::collections::{HashMap, HashSet};
use std::fmt;

use crate::api::v1alpha1::limits::MAX_LABEL_LEN;
use crate::field_error::{FieldError, FieldErrorKind};

/// Subtask names MAOS gives its own work items; no planned or manual subtask may use them.
pub const RESERVED_NAMES: [&str; 2] = [PLAN_SUBTASK, SYNTHESIZE_SUBTASK];

/// Name of the planner's work item in status and in the queue.
pub const PLAN_SUBTASK: &str = "plan";

/// Name of the final subtask that merges every result.
pub const SYNTHESIZE_SUBTASK: &str = "synthesize";

/// A subtask name: a DNS-1123 label (lowercase letters, digits and `-`, at most 63 characters,
/// starting and ending with a letter or digit).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubtaskName(String);

/// Why a string is not a subtask name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("must not be empty")]
    Empty,
    /// The name is longer than a DNS label may be.
    #[error("must be at most {max} characters, not {len}")]
    TooLong {
        /// The name's length.
        len: usize,
        /// The limit.
        max: u32,
    },
    /// The name has characters or a shape a DNS label may not have.
    #[error(
        "must be a DNS-1123 label: lowercase letters, digits and '-', starting and ending with a letter or digit"
    )]
    NotDnsLabel,
}

impl SubtaskName {
    /// Checks that `name` is a DNS-1123 label.
    pub fn new(name: &str) -> Result<Self, NameError> {
        check_dns_label(name, MAX_LABEL_LEN)?;
        Ok(Self(name.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SubtaskName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks that `name` is a DNS-1123 label of at most `max` characters.
pub fn check_dns_label(name: &str, max: u32) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > max as usize {
        return Err(NameError::TooLong {
            len: name.len(),
            max,
        });
    }
    let bytes = name.as_bytes();
    let inner_ok = bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let ends_ok = bytes.first().is_some_and(alnum) && bytes.last().is_some_and(alnum);
    if inner_ok && ends_ok {
        Ok(())
    } else {
        Err(NameError::NotDnsLabel)
    }
}

/// One subtask as written in a spec or a planner's answer, before it is checked.
#[derive(Clone, Copy, Debug)]
pub struct DraftNode<'a> {
    /// The proposed name.
    pub name: &'a str,
    /// The names it depends on.
    pub depends_on: &'a [String],
}

/// A checked DAG of subtasks, in the order they were given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    names: Vec<SubtaskName>,
    /// `dependencies[i]` holds the indices of the subtasks node `i` waits for.
    dependencies: Vec<Vec<usize>>,
}

impl Plan {
    /// Checks a list of subtasks and builds the DAG. `path` is the field path of the list (e.g.
    /// `spec.subtasks`); every error names the offending entry under it. Checks: names are
    /// DNS-1123 labels, unique and not reserved; every dependency exists, is not the subtask
    /// itself and is listed once; there is no cycle (the error shows the cycle's path).
    pub fn new(nodes: &[DraftNode<'_>], path: &str) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::with_capacity(nodes.len());
        let mut names = Vec::with_capacity(nodes.len());

        for (i, node) in nodes.iter().enumerate() {
            let field = format!("{path}[{i}].name");
            if let Err(err) = check_dns_label(node.name, MAX_LABEL_LEN) {
                errors.push(field_error_of_name(field, &err));
            } else if RESERVED_NAMES.contains(&node.name) {
                errors.push(FieldError::new(
                    field,
                    FieldErrorKind::Reserved,
                    format!("\"{}\" is reserved for MAOS's own subtasks", node.name),
                ));
            } else if let Some(first) = index.get(node.name) {
                errors.push(FieldError::new(
                    field,
                    FieldErrorKind::Duplicate,
                    format!(
                        "duplicate name \"{}\" (first used at {path}[{first}])",
                        node.name
                    ),
                ));
            }
            // A bad name is still indexed, so its dependents do not report it missing as well.
            index.entry(node.name).or_insert(i);
            names.push(SubtaskName(node.name.to_owned()));
        }

        let mut dependencies = vec![Vec::new(); nodes.len()];
        for (i, node) in nodes.iter().enumerate() {
            let mut seen = HashSet::new();
            for (j, dependency) in node.depends_on.iter().enumerate() {
                let field = format!("{path}[{i}].dependsOn[{j}]");
                if dependency == node.name {
                    errors.push(FieldError::new(
                        field,
                        FieldErrorKind::SelfDependency,
                        format!("subtask \"{}\" cannot depend on itself", node.name),
                    ));
                } else if !seen.insert(dependency.as_str()) {
                    errors.push(FieldError::new(
                        field,
                        FieldErrorKind::Duplicate,
                        format!("dependency \"{dependency}\" is listed twice"),
                    ));
                } else if let Some(&target) = index.get(dependency.as_str()) {
                    dependencies[i].push(target);
                } else {
                    errors.push(FieldError::new(
                        field,
                        FieldErrorKind::UnknownDependency,
                        format!("depends on \"{dependency}\", which is not a subtask of this plan"),
                    ));
                }
            }
        }

        for cycle in find_cycles(&dependencies) {
            // Point at the dependency entry of the cycle's first node that starts the loop.
            let (first, second) = (cycle[0], cycle[1]);
            let entry = nodes[first]
                .depends_on
                .iter()
                .position(|d| d == nodes[second].name)
                .unwrap_or(0);
            let rendered: Vec<&str> = cycle.iter().map(|&n| nodes[n].name).collect();
            errors.push(FieldError::new(
                format!("{path}[{first}].dependsOn[{entry}]"),
                FieldErrorKind::Cycle,
                format!("dependency cycle: {}", rendered.join(" -> ")),
            ));
        }

        if errors.is_empty() {
            Ok(Self {
                names,
                dependencies,
            })
        } else {
            Err(errors)
        }
    }

    /// How many subtasks the plan has.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the plan has no subtask.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The subtask names, in the order they were given.
    pub fn names(&self) -> impl Iterator<Item = &SubtaskName> {
        self.names.iter()
    }

    /// The subtasks `name` waits for, or `None` if it is not in the plan.
    pub fn dependencies_of(&self, name: &str) -> Option<impl Iterator<Item = &SubtaskName>> {
        let i = self.position(name)?;
        Some(self.dependencies[i].iter().map(|&d| &self.names[d]))
    }

    /// Subtasks not yet started whose dependencies all succeeded, in plan order.
    pub fn ready<'a>(
        &'a self,
        succeeded: &HashSet<&str>,
        started: &HashSet<&str>,
    ) -> Vec<&'a SubtaskName> {
        self.names
            .iter()
            .enumerate()
            .filter(|(i, name)| {
                !started.contains(name.as_str())
                    && !succeeded.contains(name.as_str())
                    && self.dependencies[*i]
                        .iter()
                        .all(|&d| succeeded.contains(self.names[d].as_str()))
            })
            .map(|(_, name)| name)
            .collect()
    }

    /// A topological order: every subtask comes after everything it depends on, and otherwise as
    /// early as its place in the plan allows.
    pub fn topological_order(&self) -> Vec<&SubtaskName> {
        let mut done = vec![false; self.names.len()];
        let mut order = Vec::with_capacity(self.names.len());
        // Always place the earliest subtask whose dependencies are placed; the plan is acyclic,
        // so one exists until every subtask is placed.
        while let Some(i) = (0..self.names.len())
            .find(|&i| !done[i] && self.dependencies[i].iter().all(|&d| done[d]))
        {
            done[i] = true;
            order.push(&self.names[i]);
        }
        order
    }

    /// The number of subtasks on the longest dependency chain: the fewest sequential rounds
    /// the plan needs with unlimited agents.
    pub fn critical_path_len(&self) -> usize {
        let mut depth = vec![0usize; self.names.len()];
        for name in self.topological_order() {
            let i = self.position(name.as_str()).unwrap_or_default();
            depth[i] = 1 + self.dependencies[i]
                .iter()
                .map(|&d| depth[d])
                .max()
                .unwrap_or(0);
        }
        depth.into_iter().max().unwrap_or(0)
    }

    /// For each subtask, in plan order, the number of subtasks on the longest chain that starts
    /// at it and runs through what depends on it: dispatching the largest first shortens the
    /// critical path.
    pub fn downstream_depths(&self) -> Vec<(&SubtaskName, usize)> {
        let mut depth = vec![1usize; self.names.len()];
        // Reverse topological order: dependents are settled before what they depend on.
        let order: Vec<usize> = self
            .topological_order()
            .into_iter()
            .filter_map(|name| self.position(name.as_str()))
            .collect();
        for &node in order.iter().rev() {
            for &dependency in &self.dependencies[node] {
                depth[dependency] = depth[dependency].max(depth[node] + 1);
            }
        }
        self.names.iter().zip(depth).collect()
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n.as_str() == name)
    }
}

/// Finds one cycle per strongly connected group of nodes, each as a node path that starts and
/// ends at its lowest-indexed node, e.g. `[0, 2, 1, 0]`.
fn find_cycles(dependencies: &[Vec<usize>]) -> Vec<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnStack,
        Done,
    }
    let mut marks = vec![Mark::New; dependencies.len()];
    let mut in_reported_cycle = vec![false; dependencies.len()];
    let mut cycles = Vec::new();

    for root in 0..dependencies.len() {
        if marks[root] != Mark::New {
            continue;
        }
        // Iterative DFS: (node, next edge to follow); `stack` mirrors the current path.
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        marks[root] = Mark::OnStack;
        while let Some(top) = stack.last_mut() {
            let node = top.0;
            if let Some(&next) = dependencies[node].get(top.1) {
                top.1 += 1;
                match marks[next] {
                    Mark::New => {
                        marks[next] = Mark::OnStack;
                        stack.push((next, 0));
                    }
                    Mark::OnStack => {
                        let start = stack.iter().position(|&(n, _)| n == next).unwrap_or(0);
                        let mut cycle: Vec<usize> =
                            stack[start..].iter().map(|&(n, _)| n).collect();
                        if cycle.iter().any(|&n| in_reported_cycle[n]) {
                            continue;
                        }
                        for &n in &cycle {
                            in_reported_cycle[n] = true;
                        }
                        let lowest = cycle
                            .iter()
                            .enumerate()
                            .min_by_key(|&(_, &n)| n)
                            .map(|(pos, _)| pos)
                            .unwrap_or(0);
                        cycle.rotate_left(lowest);
                        cycle.push(cycle[0]);
                        cycles.push(cycle);
                    }
                    Mark::Done => {}
                }
            } else {
                marks[node] = Mark::Done;
                stack.pop();
            }
        }
    }
    cycles.sort();
    cycles
}

/// The error of `field` for a name check's failure.
pub fn field_error_of_name(field: String, err: &NameError) -> FieldError {
    let kind = match err {
        NameError::Empty => FieldErrorKind::Required,
        NameError::TooLong { .. } => FieldErrorKind::TooLong,
        NameError::NotDnsLabel => FieldErrorKind::InvalidName,
    };
    FieldError::new(field, kind, err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deps(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn plan(spec: &[(&str, &[&str])]) -> Result<Plan, Vec<FieldError>> {
        let owned: Vec<(String, Vec<String>)> = spec
            .iter()
            .map(|(n, d)| ((*n).to_owned(), deps(d)))
            .collect();
        let drafts: Vec<DraftNode<'_>> = owned
            .iter()
            .map(|(name, depends_on)| DraftNode { name, depends_on })
            .collect();
        Plan::new(&drafts, "spec.subtasks")
    }

    fn set<'a>(names: &[&'a str]) -> HashSet<&'a str> {
        names.iter().copied().collect()
    }

    fn strings(names: Vec<&SubtaskName>) -> Vec<&str> {
        names.into_iter().map(SubtaskName::as_str).collect()
    }

    #[test]
    fn dns_labels_are_accepted_and_others_rejected() {
        assert!(SubtaskName::new("a").is_ok());
        assert!(SubtaskName::new("fetch-docs-2").is_ok());
        assert_eq!(SubtaskName::new(""), Err(NameError::Empty));
        assert_eq!(SubtaskName::new("-a"), Err(NameError::NotDnsLabel));
        assert_eq!(SubtaskName::new("a-"), Err(NameError::NotDnsLabel));
        assert_eq!(SubtaskName::new("A"), Err(NameError::NotDnsLabel));
        assert_eq!(SubtaskName::new("a.b"), Err(NameError::NotDnsLabel));
        assert_eq!(SubtaskName::new("é"), Err(NameError::NotDnsLabel));
        assert_eq!(
            SubtaskName::new(&"a".repeat(64)),
            Err(NameError::TooLong { len: 64, max: 63 })
        );
    }

    #[test]
    fn diamond_is_dispatched_in_waves() {
        let p = plan(&[("a", &[]), ("b", &["a"]), ("c", &["a"]), ("d", &["b", "c"])])
            .expect("diamond is valid");
        assert_eq!(strings(p.ready(&set(&[]), &set(&[]))), ["a"]);
        assert_eq!(
            strings(p.ready(&set(&[]), &set(&["a"]))),
            Vec::<&str>::new()
        );
        assert_eq!(strings(p.ready(&set(&["a"]), &set(&["a"]))), ["b", "c"]);
        assert_eq!(
            strings(p.ready(&set(&["a", "b"]), &set(&["a", "b", "c"]))),
            Vec::<&str>::new()
        );
        assert_eq!(
            strings(p.ready(&set(&["a", "b", "c"]), &set(&["a", "b", "c"]))),
            ["d"]
        );
        assert_eq!(p.critical_path_len(), 3);
    }

    #[test]
    fn topological_order_puts_dependencies_first() {
        let p = plan(&[("late", &["early"]), ("early", &[]), ("mid", &["early"])]).expect("valid");
        assert_eq!(strings(p.topological_order()), ["early", "late", "mid"]);
        let deps: Vec<&str> = p
            .dependencies_of("late")
            .expect("late exists")
            .map(SubtaskName::as_str)
            .collect();
        assert_eq!(deps, ["early"]);
        assert!(p.dependencies_of("nope").is_none());
    }

    #[test]
    fn downstream_depth_counts_the_longest_chain_below_each_subtask() {
        let p = plan(&[
            ("a", &[]),
            ("b", &["a"]),
            ("c", &["b"]),
            ("d", &[]),
            ("e", &["a", "d"]),
        ])
        .expect("valid");
        let depths: Vec<(&str, usize)> = p
            .downstream_depths()
            .into_iter()
            .map(|(n, d)| (n.as_str(), d))
            .collect();
        assert_eq!(depths, [("a", 3), ("b", 2), ("c", 1), ("d", 2), ("e", 1)]);
    }

    #[test]
    fn independent_subtasks_are_all_ready_at_once() {
        let p = plan(&[("a", &[]), ("b", &[]), ("c", &[])]).expect("valid");
        assert_eq!(strings(p.ready(&set(&[]), &set(&[]))), ["a", "b", "c"]);
        assert_eq!(p.critical_path_len(), 1);
        assert_eq!(p.len(), 3);
    }

    #[test]
    fn cycle_is_reported_once_from_its_lowest_node() {
        let errors =
            plan(&[("x", &[]), ("a", &["c"]), ("b", &["a"]), ("c", &["b"])]).expect_err("cycle");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "spec.subtasks[1].dependsOn[0]");
        assert_eq!(errors[0].kind, FieldErrorKind::Cycle);
        assert_eq!(errors[0].detail, "dependency cycle: a -> c -> b -> a");
    }

    #[test]
    fn two_separate_cycles_are_both_reported() {
        let errors = plan(&[("a", &["b"]), ("b", &["a"]), ("c", &["d"]), ("d", &["c"])])
            .expect_err("cycles");
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.subtasks[0].dependsOn[0]",
                "spec.subtasks[2].dependsOn[0]"
            ]
        );
    }
}
