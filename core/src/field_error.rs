//! One broken rule of a spec: which field, what kind of rule, and a message a user can act on.
//! Both the spec checks ([`crate::validate`]) and the DAG checks ([`crate::dag`]) report them.

use std::fmt;

/// What kind of rule a field breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldErrorKind {
    /// A required value is missing or empty.
    Required,
    /// A string is longer than allowed.
    TooLong,
    /// A list has more entries than allowed.
    TooMany,
    /// A number is outside its allowed range.
    OutOfRange,
    /// A name is not a DNS-1123 label.
    InvalidName,
    /// A name is reserved for MAOS's own subtasks.
    Reserved,
    /// A value that must be unique appears twice.
    Duplicate,
    /// A dependency names a subtask that does not exist.
    UnknownDependency,
    /// A subtask depends on itself.
    SelfDependency,
    /// The dependencies form a cycle.
    Cycle,
    /// A value has the wrong form.
    Invalid,
}

/// One broken rule: which field, what kind of rule, and a message a user can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The field's path, e.g. `spec.subtasks[2].dependsOn[0]`.
    pub field: String,
    /// The kind of rule broken.
    pub kind: FieldErrorKind,
    /// What is wrong, in words.
    pub detail: String,
}

impl FieldError {
    /// Builds an error for `field`.
    pub fn new(field: impl Into<String>, kind: FieldErrorKind, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            kind,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.detail)
    }
}
