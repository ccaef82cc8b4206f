//! Where an update goes next (`links.forwarding`).
//!
//! - `flood` (the classic rule): every neighbour but the one it came from. On a graph with
//!   cycles most servers hear each update more than once; the copies after the first are
//!   stale and dropped (PROTOCOL.md), but each costs a write, a parse, a compare and a log
//!   line.
//! - `tree`: every server knows the whole graph from the herd file, so for each origin it
//!   can work out the same spanning tree as every other server, with no message about it: a
//!   breadth-first tree rooted at the origin, each server's parent being its neighbour one
//!   hop nearer the origin with the smallest name. An update that arrives from this server's
//!   parent in its origin's tree goes on to this server's children only, so each server
//!   hears it once. Wherever the tree cannot be trusted it floods instead: when one of the
//!   children's links is down, when the update came from anyone but the parent (someone
//!   upstream fell back), when it came by anti-entropy, or when its origin is not in this
//!   server's herd file. What a cut tree link still keeps from a server (its subtree is
//!   reached only through it) comes back by anti-entropy, like any lost update.
//!
//! Either way only what is new is sent on, so the stale-and-dropped rule still ends every
//! flood.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

pub use herd_config::config::Forwarding;
use herd_config::config::HerdConfig;

/// This server's place in every origin's tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    pub forwarding: Forwarding,
    /// Per origin: this server's parent (none for its own updates) and children.
    places: BTreeMap<String, Place>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Place {
    parent: Option<String>,
    children: Vec<String>,
}

/// Where one update goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<'a> {
    /// Every up neighbour but the sender.
    Flood,
    /// These neighbours (the tree's children), every one of whose links is up.
    Only(&'a [String]),
}

impl Routes {
    /// Server `me`'s routes in the herd `config` describes.
    pub fn new(config: &HerdConfig, me: &str) -> Routes {
        let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for (name, server) in &config.servers {
            graph.entry(name).or_default();
            for n in &server.neighbours {
                graph.entry(name).or_default().insert(n);
                graph.entry(n).or_default().insert(name);
            }
        }
        Routes::from_graph(&graph, me, config.links.forwarding)
    }

    /// Server `me`'s routes in `graph` (every link in both directions).
    pub fn from_graph(
        graph: &BTreeMap<&str, BTreeSet<&str>>,
        me: &str,
        forwarding: Forwarding,
    ) -> Routes {
        let mut places = BTreeMap::new();
        if forwarding == Forwarding::Tree {
            for origin in graph.keys() {
                let parents = tree(graph, origin);
                let children = graph
                    .get(me)
                    .into_iter()
                    .flatten()
                    .filter(|n| parents.get(**n) == Some(&me))
                    .map(|n| n.to_string())
                    .collect();
                let place = Place {
                    parent: parents.get(me).map(|p| p.to_string()),
                    children,
                };
                // A server the origin cannot reach has no place in its tree: it floods.
                if *origin == me || place.parent.is_some() {
                    places.insert(origin.to_string(), place);
                }
            }
        }
        Routes { forwarding, places }
    }

    /// Where an update from `origin` goes, arriving from neighbour `from` (`None`: a client
    /// of this server) by flood (`flooded`; false for anti-entropy, which floods), given
    /// which neighbours' links are up.
    pub fn next<'a>(
        &'a self,
        origin: &str,
        from: Option<&str>,
        flooded: bool,
        is_up: impl Fn(&str) -> bool,
    ) -> Next<'a> {
        if self.forwarding == Forwarding::Flood || !flooded {
            return Next::Flood;
        }
        let Some(place) = self.places.get(origin) else {
            return Next::Flood;
        };
        if from != place.parent.as_deref() || !place.children.iter().all(|c| is_up(c)) {
            return Next::Flood;
        }
        Next::Only(&place.children)
    }
}

/// The breadth-first tree rooted at `origin`: each reachable server's parent, the neighbour
/// one hop nearer with the smallest name.
fn tree<'g>(
    graph: &BTreeMap<&'g str, BTreeSet<&'g str>>,
    origin: &'g str,
) -> BTreeMap<&'g str, &'g str> {
    let mut depth: BTreeMap<&str, usize> = BTreeMap::from([(origin, 0)]);
    let mut queue = VecDeque::from([origin]);
    while let Some(at) = queue.pop_front() {
        for &n in graph.get(at).into_iter().flatten() {
            if !depth.contains_key(n) {
                depth.insert(n, depth[at] + 1);
                queue.push_back(n);
            }
        }
    }
    let mut parents = BTreeMap::new();
    for (&node, &d) in &depth {
        if d == 0 {
            continue;
        }
        // Neighbours are in name order: the first one a hop nearer is the parent.
        let parent = graph[node]
            .iter()
            .find(|n| depth.get(**n) == Some(&(d - 1)))
            .expect("a breadth-first node has a neighbour one hop nearer");
        parents.insert(node, *parent);
    }
    parents
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(
        links: &[(&'static str, &'static str)],
    ) -> BTreeMap<&'static str, BTreeSet<&'static str>> {
        let mut g: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for (a, b) in links {
            g.entry(a).or_default().insert(b);
            g.entry(b).or_default().insert(a);
        }
        g
    }

    /// Issue 26's graph.
    const HERD: &[(&str, &str)] = &[
        ("Bailey", "Bona"),
        ("Bailey", "Campbell"),
        ("Bona", "Clark"),
        ("Bona", "Campbell"),
        ("Campbell", "Jaquez"),
        ("Clark", "Jaquez"),
    ];

    fn children(g: &BTreeMap<&str, BTreeSet<&str>>, me: &str, origin: &str) -> Vec<String> {
        let routes = Routes::from_graph(g, me, Forwarding::Tree);
        match routes.next(
            origin,
            routes.places[origin].parent.as_deref(),
            true,
            |_| true,
        ) {
            Next::Only(c) => c.to_vec(),
            Next::Flood => panic!("the tree is trusted when every link is up"),
        }
    }

    #[test]
    fn every_server_hears_an_update_once_on_the_tree() {
        let g = graph(HERD);
        for origin in g.keys() {
            // Walk the tree from the origin: every server reached exactly once.
            let mut reached = vec![origin.to_string()];
            let mut frontier = vec![origin.to_string()];
            while let Some(at) = frontier.pop() {
                for child in children(&g, &at, origin) {
                    assert!(!reached.contains(&child), "{child} twice from {origin}");
                    reached.push(child.clone());
                    frontier.push(child);
                }
            }
            assert_eq!(reached.len(), g.len(), "from {origin}: {reached:?}");
        }
        assert_eq!(children(&g, "Bailey", "Bailey"), ["Bona", "Campbell"]);
        assert_eq!(children(&g, "Bona", "Bailey"), ["Clark"]);
        assert_eq!(children(&g, "Campbell", "Bailey"), ["Jaquez"]);
        assert!(children(&g, "Clark", "Bailey").is_empty());
    }

    #[test]
    fn it_floods_where_the_tree_cannot_be_trusted() {
        let g = graph(HERD);
        let bona = Routes::from_graph(&g, "Bona", Forwarding::Tree);
        // A child's link down.
        assert_eq!(
            bona.next("Bailey", Some("Bailey"), true, |n| n != "Clark"),
            Next::Flood
        );
        // From someone other than the parent: upstream fell back.
        assert_eq!(
            bona.next("Bailey", Some("Campbell"), true, |_| true),
            Next::Flood
        );
        // By anti-entropy, or from an origin this herd file does not know.
        assert_eq!(
            bona.next("Bailey", Some("Bailey"), false, |_| true),
            Next::Flood
        );
        assert_eq!(
            bona.next("Nobody", Some("Bailey"), true, |_| true),
            Next::Flood
        );
        // A link that is no child's may be down.
        assert_eq!(
            bona.next("Bailey", Some("Bailey"), true, |n| n != "Campbell"),
            Next::Only(&["Clark".to_string()])
        );
        let flood = Routes::from_graph(&g, "Bona", Forwarding::Flood);
        assert_eq!(
            flood.next("Bailey", Some("Bailey"), true, |_| true),
            Next::Flood
        );
    }

    #[test]
    fn ties_go_to_the_smallest_name() {
        // A square: Dee is two hops from Ann both ways.
        let g = graph(&[
            ("Ann", "Bob"),
            ("Ann", "Cid"),
            ("Bob", "Dee"),
            ("Cid", "Dee"),
        ]);
        assert_eq!(children(&g, "Bob", "Ann"), ["Dee"]);
        assert!(children(&g, "Cid", "Ann").is_empty());
    }
}
