//! `mapper_profiles`: dotted metric names rewritten into a name and tags, as the Datadog agent's DogStatsD mapper
//! does (`airflow.job.duration.my_dag.my_task` → `airflow.job.duration` tagged `dag:my_dag,task:my_task`).
//!
//! Only a new series is mapped (a known one is found by its line's text before any of this), and each worker
//! remembers the outcome for up to `mapper_cache_size` names, so new series of a known name skip the matching too.

use std::collections::HashMap;
use std::sync::Arc;

use regex::Regex;

pub use crate::config::controls::compile_pattern;
use crate::config::MapperProfile;

/// A name as mapped: the new name and the tags added (`key:value`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    pub name: String,
    pub tags: Vec<String>,
}

#[derive(Debug)]
struct Mapping {
    pattern: Regex,
    name: String,
    tags: Vec<(String, String)>,
}

#[derive(Debug)]
struct Profile {
    /// Empty: every name.
    prefix: String,
    mappings: Vec<Mapping>,
}

/// The compiled profiles.
#[derive(Debug)]
pub struct Mapper {
    profiles: Vec<Profile>,
}

impl Mapper {
    /// `None` when there are no profiles. The patterns were checked by validation; one that does not compile here
    /// is an error all the same.
    pub fn new(profiles: &[MapperProfile]) -> Result<Option<Mapper>, String> {
        if profiles.is_empty() {
            return Ok(None);
        }
        let mut compiled = Vec::with_capacity(profiles.len());
        for p in profiles {
            let mut mappings = Vec::with_capacity(p.mappings.len());
            for m in &p.mappings {
                mappings.push(Mapping {
                    pattern: compile_pattern(&m.pattern, m.match_type)
                        .map_err(|e| format!("mapper profile {:?}, match {:?}: {e}", p.name, m.pattern))?,
                    name: m.name.clone(),
                    tags: m.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                });
            }
            let prefix = if p.prefix == "*" {
                String::new()
            } else {
                p.prefix.clone()
            };
            compiled.push(Profile { prefix, mappings });
        }
        Ok(Some(Mapper { profiles: compiled }))
    }

    /// The mapping of `name`: the first mapping that matches, in the first profile whose prefix the name has that
    /// has one. `None` when none matches (the name stays as it is).
    pub fn map(&self, name: &str) -> Option<Mapped> {
        for profile in self.profiles.iter().filter(|p| name.starts_with(&p.prefix)) {
            for m in &profile.mappings {
                let Some(caps) = m.pattern.captures(name) else { continue };
                let mut new_name = String::new();
                caps.expand(&m.name, &mut new_name);
                if new_name.is_empty() {
                    continue;
                }
                let tags = m
                    .tags
                    .iter()
                    .filter_map(|(k, template)| {
                        let mut value = String::new();
                        caps.expand(template, &mut value);
                        // A captured part may hold what a tag cannot.
                        let value = value.replace(',', "_");
                        (!value.is_empty()).then(|| format!("{k}:{value}"))
                    })
                    .collect();
                return Some(Mapped { name: new_name, tags });
            }
        }
        None
    }
}

/// A worker's memory of names mapped: up to `capacity` names, forgotten all at once when full (a flood of
/// distinct names then costs one matching each, as without a cache).
#[derive(Debug, Default)]
pub struct MapperCache {
    capacity: usize,
    names: HashMap<Box<str>, Option<Arc<Mapped>>>,
}

impl MapperCache {
    pub fn new(capacity: usize) -> Self {
        MapperCache {
            capacity,
            names: HashMap::new(),
        }
    }

    /// The mapping of `name` by `mapper`, from memory if it is there.
    pub fn map(&mut self, mapper: &Mapper, name: &str) -> Option<Arc<Mapped>> {
        if let Some(m) = self.names.get(name) {
            return m.clone();
        }
        let mapped = mapper.map(name).map(Arc::new);
        if self.capacity > 0 {
            if self.names.len() >= self.capacity {
                self.names.clear();
            }
            self.names.insert(name.into(), mapped.clone());
        }
        mapped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{MatchType, MetricMapping};

    /// A mapping as `(match, match_type, name, tags)`.
    type Spec<'a> = (&'a str, MatchType, &'a str, &'a [(&'a str, &'a str)]);

    fn mapper(prefix: &str, mappings: &[Spec<'_>]) -> Mapper {
        let profile = MapperProfile {
            name: "p".into(),
            prefix: prefix.into(),
            mappings: mappings
                .iter()
                .map(|(pattern, match_type, name, tags)| MetricMapping {
                    pattern: pattern.to_string(),
                    match_type: *match_type,
                    name: name.to_string(),
                    tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                })
                .collect(),
        };
        Mapper::new(&[profile]).unwrap().unwrap()
    }

    #[test]
    fn a_wildcard_mapping_turns_dotted_parts_into_tags() {
        let m = mapper(
            "airflow.",
            &[(
                "airflow.job.duration.*.*",
                MatchType::Wildcard,
                "airflow.job.duration",
                &[("dag", "$1"), ("task", "${2}")],
            )],
        );
        let mapped = m.map("airflow.job.duration.my_dag.my_task").unwrap();
        assert_eq!(mapped.name, "airflow.job.duration");
        assert_eq!(mapped.tags, vec!["dag:my_dag", "task:my_task"]);
        // `*` is one part: a name with more parts, or another prefix, is not mapped.
        assert_eq!(m.map("airflow.job.duration.a.b.c"), None);
        assert_eq!(m.map("other.job.duration.a.b"), None);
    }

    #[test]
    fn a_regex_mapping_matches_the_whole_name_and_the_first_match_wins() {
        let m = mapper(
            "",
            &[
                (
                    "queue\\.([a-z]+)\\.depth",
                    MatchType::Regex,
                    "queue.depth",
                    &[("queue", "$1")],
                ),
                ("queue.*.depth", MatchType::Wildcard, "never", &[]),
                ("queue.(.*)", MatchType::Regex, "queue.other", &[("part", "$1")]),
            ],
        );
        assert_eq!(
            m.map("queue.jobs.depth").unwrap(),
            Mapped {
                name: "queue.depth".into(),
                tags: vec!["queue:jobs".into()]
            }
        );
        assert_eq!(m.map("queue.j0bs.depth").unwrap().name, "never");
        assert_eq!(m.map("queue.a,b").unwrap().tags, vec!["part:a_b"]);
        assert_eq!(m.map("xqueue.jobs.depth"), None);
    }

    #[test]
    fn bad_patterns_are_refused_with_the_reason() {
        assert!(compile_pattern("a.(b", MatchType::Regex)
            .unwrap_err()
            .contains("compile"));
        assert!(compile_pattern("a.b?", MatchType::Wildcard)
            .unwrap_err()
            .contains("'?'"));
        assert!(compile_pattern("", MatchType::Wildcard).is_err());
    }

    #[test]
    fn the_cache_answers_known_names_and_forgets_when_full() {
        let m = mapper("", &[("a.*", MatchType::Wildcard, "a", &[("x", "$1")])]);
        let mut cache = MapperCache::new(2);
        assert_eq!(cache.map(&m, "a.1").unwrap().tags, vec!["x:1"]);
        assert!(cache.map(&m, "b").is_none());
        assert_eq!(cache.names.len(), 2);
        assert_eq!(cache.map(&m, "a.2").unwrap().tags, vec!["x:2"]);
        assert_eq!(cache.names.len(), 1);
    }
}
