//! Sharding rule groups across replicas of `spillway run` (SPEC §2
//! "Horizontal scale"): `--cluster.members-count N --cluster.member-num I`
//! (or the `cluster:` section of the run config) make member `I` of `N`
//! evaluate only the groups it owns; `--cluster.replication-factor R` gives
//! each group `R` owners, so that it keeps being evaluated while `R - 1` of
//! them are down.
//!
//! Ownership is rendezvous (highest random weight) hashing: each member
//! scores a group by `xxh64(group key, member)` and the `R` highest scores
//! own it. Every member computes the same answer from the same key and `N`,
//! with nothing to coordinate; going from `N` to `N + 1` members moves only
//! the groups the new member now wins, about `1/(N + 1)` of them, and
//! nothing moves between the members that stay.
//!
//! The group key is the group's rule file relative to the directory of the
//! run config, a NUL, and the group name, so members whose configs live in
//! different directories (test dirs, hosts) but share the layout agree.
//! Two groups of one name in two files are two keys. Changing the hash is a
//! breaking change: members of different versions would disagree during a
//! rolling upgrade, so `pinned_owners` fixes a few answers.
//!
//! Replicas of one group evaluate the same aligned timestamps with the same
//! labels, so their samples are identical; the destination collapses them
//! with `-dedup.minScrapeInterval` (VictoriaMetrics) set to the smallest
//! group interval. `/api/v1/rules` (the `cluster` object) and `/metrics`
//! (`spillway_cluster_*`) show what this member owns; `replay` and breach
//! captures follow the same ownership ([`Membership::owns`]).
//!
//! Uses nothing but `rules` (the group type).

use super::rules::Group;
use std::path::Path;

/// The `cluster:` section of the run config; flags override each field.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// How many members share the groups (default 1: no sharding).
    pub members_count: Option<u32>,
    /// This member: `0..members_count`, or a pod name ending in it (`spillway-2`).
    pub member_num: Option<String>,
    /// How many members evaluate each group (default 1).
    pub replication_factor: Option<u32>,
}

/// `--cluster.*` flags: they win over the config, and stay in force across reloads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterFlags {
    pub members_count: Option<u32>,
    pub member_num: Option<String>,
    pub replication_factor: Option<u32>,
}

/// Which member this process is, of how many, with how many owners per group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Membership {
    pub members_count: u32,
    pub member_num: u32,
    pub replication_factor: u32,
}

/// More members than this is a typo, not a deployment (and each member
/// scores every group once per member).
pub const MAX_MEMBERS: u32 = 1000;

impl Default for Membership {
    fn default() -> Self {
        Membership::SINGLE
    }
}

impl Membership {
    /// One member that owns every group.
    pub const SINGLE: Membership = Membership {
        members_count: 1,
        member_num: 0,
        replication_factor: 1,
    };

    /// The membership the config and the flags describe; every problem,
    /// each naming the flag or the config field it comes from.
    pub fn resolve(spec: &ClusterSpec, flags: &ClusterFlags) -> Result<Membership, Vec<String>> {
        let pick = |flag: &Option<u32>, conf: &Option<u32>, f: &'static str, c: &'static str| {
            flag.map(|v| (v, f)).or(conf.map(|v| (v, c)))
        };
        let count = pick(
            &flags.members_count,
            &spec.members_count,
            "--cluster.members-count",
            "cluster.members_count",
        );
        let factor = pick(
            &flags.replication_factor,
            &spec.replication_factor,
            "--cluster.replication-factor",
            "cluster.replication_factor",
        );
        let num = match (&flags.member_num, &spec.member_num) {
            (Some(v), _) => Some((v.as_str(), "--cluster.member-num")),
            (None, Some(v)) => Some((v.as_str(), "cluster.member_num")),
            (None, None) => None,
        };
        let mut problems = Vec::new();
        let (members_count, count_name) = count.unwrap_or((1, "--cluster.members-count"));
        if !(1..=MAX_MEMBERS).contains(&members_count) {
            problems.push(format!(
                "{count_name} {members_count}: expected 1 to {MAX_MEMBERS} members"
            ));
        }
        let member_num = match num {
            None if members_count > 1 => {
                problems.push(format!(
                    "{count_name} {members_count} needs this member's number: set --cluster.member-num (0 to {}, or a pod name such as spillway-0)",
                    members_count - 1
                ));
                0
            }
            None => 0,
            Some((text, name)) => match parse_member_num(text) {
                Ok(n) if n < members_count => n,
                Ok(n) => {
                    problems.push(format!(
                        "{name} {text:?}: member {n} does not exist with {count_name} {members_count}; members are numbered 0 to {}",
                        members_count.saturating_sub(1)
                    ));
                    0
                }
                Err(e) => {
                    problems.push(format!("{name} {e}"));
                    0
                }
            },
        };
        let (replication_factor, factor_name) =
            factor.unwrap_or((1, "--cluster.replication-factor"));
        if replication_factor < 1 || replication_factor > members_count.max(1) {
            problems.push(format!(
                "{factor_name} {replication_factor}: expected 1 to {count_name} ({members_count})"
            ));
        }
        if problems.is_empty() {
            Ok(Membership {
                members_count,
                member_num,
                replication_factor,
            })
        } else {
            Err(problems)
        }
    }

    /// Whether every group is this member's (no sharding, or `R = N`).
    pub fn owns_all(&self) -> bool {
        self.replication_factor >= self.members_count
    }

    /// The members that evaluate the group with this key (see [`group_key`]),
    /// highest score first.
    pub fn owners(&self, key: &str) -> Vec<u32> {
        if self.members_count <= 1 {
            return vec![0];
        }
        let mut scored: Vec<(u64, u32)> = (0..self.members_count)
            .map(|m| (score(key, m), m))
            .collect();
        // Highest score first; a tie (practically never) goes to the lower number.
        scored.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        scored
            .into_iter()
            .take(self.replication_factor as usize)
            .map(|(_, m)| m)
            .collect()
    }

    /// Whether this member evaluates (and captures for, and replays) the
    /// group with this key. The seam for every feature that follows
    /// group ownership.
    pub fn owns(&self, key: &str) -> bool {
        self.owns_all() || self.owners(key).contains(&self.member_num)
    }
}

fn score(key: &str, member: u32) -> u64 {
    let mut h = xxhash_rust::xxh64::Xxh64::new(0);
    h.update(key.as_bytes());
    h.update(&[0]);
    h.update(&member.to_le_bytes());
    h.digest()
}

/// `2`, or a name ending in `-2` (a StatefulSet pod name, `spillway-2`).
pub fn parse_member_num(text: &str) -> Result<u32, String> {
    let t = text.trim();
    let digits = t.rsplit_once('-').map_or(t, |(_, n)| n);
    digits.parse::<u32>().map_err(|_| {
        format!("{text:?}: expected a member number (0, 1, ...) or a pod name ending in one (spillway-2)")
    })
}

/// The key a group is hashed by: its file relative to `config_dir` (as
/// written when it is elsewhere), a NUL, its name.
pub fn group_key(config_dir: &Path, file: &str, name: &str) -> String {
    let rel = Path::new(file)
        .strip_prefix(config_dir)
        .ok()
        .filter(|_| !config_dir.as_os_str().is_empty())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| file.to_string());
    format!("{rel}\0{name}")
}

/// One group and its owners, for the API.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct GroupOwners {
    pub name: String,
    pub file: String,
    pub owners: Vec<u32>,
}

/// What this member owns under the running config.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterView {
    pub membership: Membership,
    /// The config's directory, for [`ClusterView::key`].
    pub config_dir: std::path::PathBuf,
    pub owned: Vec<GroupOwners>,
    /// Groups of the rule files that other members evaluate.
    pub others: Vec<GroupOwners>,
}

impl ClusterView {
    /// Splits `groups` into those this member owns (returned, in order) and
    /// the others (kept in the view).
    pub fn assign(
        membership: Membership,
        config_dir: &Path,
        groups: Vec<Group>,
    ) -> (ClusterView, Vec<Group>) {
        let mut view = ClusterView {
            membership,
            config_dir: config_dir.to_path_buf(),
            ..ClusterView::default()
        };
        let mut mine = Vec::with_capacity(groups.len());
        for g in groups {
            let owners = membership.owners(&group_key(config_dir, &g.file, &g.name));
            let entry = GroupOwners {
                name: g.name.clone(),
                file: g.file.clone(),
                owners,
            };
            if membership.owns_all() || entry.owners.contains(&membership.member_num) {
                view.owned.push(entry);
                mine.push(g);
            } else {
                view.others.push(entry);
            }
        }
        (view, mine)
    }

    /// The key of a group of the running config (see [`group_key`]).
    pub fn key(&self, file: &str, name: &str) -> String {
        group_key(&self.config_dir, file, name)
    }

    /// Whether this member owns the group `name` of rule file `file`.
    pub fn owns_group(&self, file: &str, name: &str) -> bool {
        self.membership.owns(&self.key(file, name))
    }

    /// Owners of a group that another member evaluates, by name.
    pub fn owners_of(&self, name: &str) -> Option<&[u32]> {
        self.others
            .iter()
            .find(|g| g.name == name)
            .map(|g| g.owners.as_slice())
    }

    /// The `cluster` object of `/api/v1/rules`.
    pub fn api_json(&self) -> serde_json::Value {
        let m = &self.membership;
        serde_json::json!({
            "members_count": m.members_count,
            "member_num": m.member_num,
            "replication_factor": m.replication_factor,
            "groups_owned": self.owned,
            "groups_not_owned": self.others,
        })
    }

    /// `spillway_cluster_*` in the text exposition format.
    pub fn metrics_text(&self) -> String {
        let m = &self.membership;
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, value: u64| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
            ));
        };
        gauge(
            "spillway_cluster_groups_owned",
            "Rule groups this member evaluates.",
            self.owned.len() as u64,
        );
        gauge(
            "spillway_cluster_groups_total",
            "Rule groups in the rule files, owned by any member.",
            (self.owned.len() + self.others.len()) as u64,
        );
        gauge(
            "spillway_cluster_members_count",
            "Members sharing the rule groups (--cluster.members-count).",
            u64::from(m.members_count),
        );
        gauge(
            "spillway_cluster_member_num",
            "This member's number (--cluster.member-num).",
            u64::from(m.member_num),
        );
        gauge(
            "spillway_cluster_replication_factor",
            "Members evaluating each group (--cluster.replication-factor).",
            u64::from(m.replication_factor),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(n: u32, i: u32, r: u32) -> Membership {
        Membership {
            members_count: n,
            member_num: i,
            replication_factor: r,
        }
    }

    fn keys(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                group_key(
                    Path::new(""),
                    &format!("rules/f{}.yml", i % 7),
                    &format!("g{i}"),
                )
            })
            .collect()
    }

    #[test]
    fn member_numbers_and_pod_names() {
        assert_eq!(parse_member_num("2"), Ok(2));
        assert_eq!(parse_member_num("spillway-2"), Ok(2));
        assert_eq!(parse_member_num("spill-way-12"), Ok(12));
        for bad in ["web", "spillway-", "-1x", ""] {
            let e = parse_member_num(bad).unwrap_err();
            assert!(e.contains("pod name ending in one"), "{bad}: {e}");
        }
    }

    #[test]
    fn flags_win_and_problems_name_their_source() {
        let spec = ClusterSpec {
            members_count: Some(3),
            member_num: Some("1".into()),
            replication_factor: Some(2),
        };
        let m = Membership::resolve(&spec, &ClusterFlags::default()).unwrap();
        assert_eq!(m, member(3, 1, 2));
        let flags = ClusterFlags {
            member_num: Some("spillway-2".into()),
            ..ClusterFlags::default()
        };
        assert_eq!(Membership::resolve(&spec, &flags).unwrap(), member(3, 2, 2));
        assert_eq!(
            Membership::resolve(&ClusterSpec::default(), &ClusterFlags::default()).unwrap(),
            Membership::SINGLE
        );

        let bad = ClusterFlags {
            members_count: Some(3),
            member_num: Some("spillway-3".into()),
            replication_factor: Some(4),
        };
        let all = Membership::resolve(&ClusterSpec::default(), &bad)
            .unwrap_err()
            .join("\n");
        assert!(
            all.contains("--cluster.member-num \"spillway-3\": member 3 does not exist with --cluster.members-count 3"),
            "{all}"
        );
        assert!(
            all.contains(
                "--cluster.replication-factor 4: expected 1 to --cluster.members-count (3)"
            ),
            "{all}"
        );
        let missing = ClusterSpec {
            members_count: Some(2),
            ..ClusterSpec::default()
        };
        let e = Membership::resolve(&missing, &ClusterFlags::default())
            .unwrap_err()
            .join("\n");
        assert!(
            e.contains("cluster.members_count 2 needs this member's number"),
            "{e}"
        );
        let zero = ClusterSpec {
            members_count: Some(0),
            ..ClusterSpec::default()
        };
        let e = Membership::resolve(&zero, &ClusterFlags::default()).unwrap_err();
        assert!(
            e[0].starts_with("cluster.members_count 0: expected 1 to"),
            "{e:?}"
        );
    }

    #[test]
    fn every_group_has_exactly_r_distinct_owners() {
        for (n, r) in [(1, 1), (3, 1), (3, 2), (5, 3), (4, 4)] {
            for k in keys(200) {
                let owners = member(n, 0, r).owners(&k);
                let mut sorted = owners.clone();
                sorted.sort_unstable();
                sorted.dedup();
                assert_eq!(sorted.len(), r as usize, "{n}/{r}: {owners:?}");
                assert!(owners.iter().all(|o| *o < n));
                let owning = (0..n).filter(|i| member(n, *i, r).owns(&k)).count();
                assert_eq!(owning, r as usize, "{k:?} with {n}/{r}");
            }
        }
    }

    #[test]
    fn shards_are_balanced() {
        let ks = keys(3000);
        let mut per = [0usize; 3];
        for k in &ks {
            per[member(3, 0, 1).owners(k)[0] as usize] += 1;
        }
        for p in per {
            assert!((800..1200).contains(&p), "{per:?}");
        }
    }

    #[test]
    fn adding_a_member_moves_about_one_in_n_and_only_to_it() {
        let ks = keys(3000);
        let mut moved = 0;
        for k in &ks {
            let before = member(3, 0, 1).owners(k)[0];
            let after = member(4, 0, 1).owners(k)[0];
            if before != after {
                assert_eq!(after, 3, "{k:?} moved between members that stayed");
                moved += 1;
            }
        }
        // 1/4 of 3000 is 750.
        assert!((600..900).contains(&moved), "moved {moved}");
    }

    /// Members of two versions must agree; a change here breaks rolling upgrades.
    #[test]
    fn pinned_owners() {
        let m = member(3, 0, 2);
        let got: Vec<Vec<u32>> = ["rules/a.yml\0cpu", "rules/a.yml\0disk", "b.yml\0net"]
            .iter()
            .map(|k| m.owners(k))
            .collect();
        assert_eq!(got, PINNED);
    }
    const PINNED: [[u32; 2]; 3] = [[0, 2], [2, 0], [2, 1]];

    #[test]
    fn keys_are_relative_to_the_config_dir() {
        assert_eq!(
            group_key(Path::new("/tmp/a"), "/tmp/a/rules/x.yml", "g"),
            "rules/x.yml\0g"
        );
        assert_eq!(
            group_key(Path::new("/tmp/a"), "/etc/rules/x.yml", "g"),
            "/etc/rules/x.yml\0g"
        );
        assert_eq!(
            group_key(Path::new(""), "rules/x.yml", "g"),
            "rules/x.yml\0g"
        );
    }

    #[test]
    fn assign_splits_the_groups() {
        let yaml = (0..12)
            .map(|i| format!("  - name: g{i}\n    rules:\n      - record: r\n        expr: up\n"))
            .collect::<String>();
        let groups = crate::run::rules::load_str(
            "/cfg/rules/a.yml",
            &format!("groups:\n{yaml}"),
            &Default::default(),
        )
        .unwrap();
        let mut seen = Vec::new();
        for i in 0..3 {
            let (view, mine) =
                ClusterView::assign(member(3, i, 1), Path::new("/cfg"), groups.clone());
            assert_eq!(view.owned.len(), mine.len());
            assert_eq!(view.owned.len() + view.others.len(), 12);
            for g in &mine {
                assert!(view.owns_group(&g.file, &g.name));
            }
            let text = view.metrics_text();
            assert!(
                text.contains(&format!("spillway_cluster_groups_owned {}\n", mine.len())),
                "{text}"
            );
            seen.extend(mine.into_iter().map(|g| g.name));
        }
        seen.sort();
        let mut all: Vec<String> = groups.iter().map(|g| g.name.clone()).collect();
        all.sort();
        assert_eq!(seen, all, "each group owned by exactly one of three");
    }
}
