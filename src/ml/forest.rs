//! Random forests in the Redis-ML model: trees built node by node from `ML.FOREST.ADD`
//! paths, validated, laid out in pre-order and evaluated on a dense feature vector.

use rustc_hash::FxHashMap;

use super::{MlError, atof};

/// No child.
const NIL: u32 = u32::MAX;

/// Highest numeric feature slot (`(int)atof(attr)` in 1..=2047 names a slot).
pub(crate) const MAX_SLOT: i64 = 2047;

/// A feature as a model or a sample names it: a numeric slot or an exact name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AttrKey {
    Slot(u32),
    Name(Box<[u8]>),
}

impl AttrKey {
    /// Redis-ML's rule: an attribute whose `(int)atof(...)` is in 1..=2047 is a numeric slot,
    /// anything else is a name matched exactly.
    pub fn parse(s: &[u8]) -> AttrKey {
        match slot_of(s) {
            Some(n) => AttrKey::Slot(n),
            None => AttrKey::Name(s.into()),
        }
    }
}

/// The numeric slot an attribute names, if it names one.
fn slot_of(s: &[u8]) -> Option<u32> {
    // A name starting with a letter reads as 0 unless it spells inf or nan: skip the parse.
    if let Some(c) = s.first()
        && c.is_ascii_alphabetic()
    {
        let word = |w: &[u8]| s.len() >= 3 && s[..3].eq_ignore_ascii_case(w);
        if !word(b"inf") && !word(b"nan") {
            return None;
        }
    }
    // `as` saturates (C's cast of an out-of-range double is undefined; any value out of
    // 1..=2047 means "a name" either way).
    let n = atof(s) as i64;
    (1..=MAX_SLOT).contains(&n).then_some(n as u32)
}

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    /// Left iff `x <= thr`.
    Numeric,
    /// Left iff `x` equals one of the categories.
    Categoric(Box<[f64]>),
    /// `thr` holds the leaf value; optional per-class counts.
    Leaf(Option<Box<[f64]>>),
}

#[derive(Clone, Debug, PartialEq)]
struct Node {
    kind: Kind,
    /// Dense feature index (splits only).
    attr: u32,
    thr: f64,
    left: u32,
    right: u32,
}

impl Node {
    fn is_split(&self) -> bool {
        !matches!(self.kind, Kind::Leaf(_))
    }
}

/// One tree; `nodes[0]` is the root once there is one. After every command the nodes are
/// in pre-order with every split having both children.
#[derive(Clone, Debug, Default)]
pub struct Tree {
    nodes: Vec<Node>,
}

impl Tree {
    /// The leaf reached by `x`.
    #[inline]
    fn leaf(&self, x: &[f64]) -> &Node {
        let nodes = &self.nodes[..];
        let mut i = 0usize;
        loop {
            let n = &nodes[i];
            let next = match &n.kind {
                Kind::Numeric => {
                    if x[n.attr as usize] <= n.thr {
                        n.left
                    } else {
                        n.right
                    }
                }
                Kind::Categoric(cats) => {
                    let v = x[n.attr as usize];
                    if cats.contains(&v) { n.left } else { n.right }
                }
                Kind::Leaf(_) => return n,
            };
            i = next as usize;
        }
    }

    /// Sets the node at `path` (validated: root char, then l/r), keeping the children of a
    /// replaced split when the new node is a split too.
    fn set(&mut self, path: &[u8], mut node: Node) -> Result<(), MlError> {
        if path.len() == 1 {
            match self.nodes.first_mut() {
                Some(root) => {
                    if node.is_split() {
                        (node.left, node.right) = (root.left, root.right);
                    }
                    *root = node;
                }
                None => self.nodes.push(node),
            }
            return Ok(());
        }
        if self.nodes.is_empty() {
            return Err(MlError::NoParent(lossy(path)));
        }
        let mut at = 0usize;
        for (depth, &c) in path[1..].iter().enumerate() {
            let last = depth + 2 == path.len();
            let n = &self.nodes[at];
            if !n.is_split() {
                return Err(MlError::NoParent(lossy(path)));
            }
            let child = if c.eq_ignore_ascii_case(&b'l') { n.left } else { n.right };
            if child == NIL {
                if !last {
                    return Err(MlError::NoParent(lossy(path)));
                }
                let id = self.nodes.len() as u32;
                self.nodes.push(node);
                let p = &mut self.nodes[at];
                if c.eq_ignore_ascii_case(&b'l') {
                    p.left = id;
                } else {
                    p.right = id;
                }
                return Ok(());
            }
            if last {
                let old = &mut self.nodes[child as usize];
                if node.is_split() {
                    (node.left, node.right) = (old.left, old.right);
                }
                *old = node;
                return Ok(());
            }
            at = child as usize;
        }
        unreachable!("the loop returns at the last path character")
    }

    /// Whether every split has both children.
    fn complete(&self) -> bool {
        !self.nodes.is_empty()
            && self
                .nodes
                .iter()
                .all(|n| !n.is_split() || (n.left != NIL && n.right != NIL))
    }

    /// Re-lays the reachable nodes out in pre-order (dropping replaced subtrees).
    fn compact(&mut self) {
        let mut out = Vec::with_capacity(self.nodes.len());
        let mut stack = vec![(0u32, NIL, false)];
        while let Some((i, parent, is_left)) = stack.pop() {
            let id = out.len() as u32;
            let n = self.nodes[i as usize].clone();
            if parent != NIL {
                let p: &mut Node = &mut out[parent as usize];
                if is_left {
                    p.left = id;
                } else {
                    p.right = id;
                }
            }
            if n.is_split() {
                stack.push((n.right, id, false));
                stack.push((n.left, id, true));
            }
            out.push(n);
        }
        self.nodes = out;
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Depth of the deepest leaf (a lone root is depth 0).
    pub fn depth(&self) -> usize {
        let mut best = 0;
        let mut stack = vec![(0usize, 0usize)];
        while let Some((i, d)) = stack.pop() {
            let n = &self.nodes[i];
            if n.is_split() {
                stack.push((n.left as usize, d + 1));
                stack.push((n.right as usize, d + 1));
            } else {
                best = best.max(d);
            }
        }
        best
    }
}

/// How `ML.FOREST.RUN` combines the trees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Majority vote of the leaves' classes (or of their class statistics).
    Classification,
    /// Mean of the leaf values.
    Regression,
}

/// A forest: trees plus the dense layout of the features they test.
#[derive(Clone, Debug, Default)]
pub struct Forest {
    pub trees: Vec<Tree>,
    /// Dense index -> feature.
    pub attrs: Vec<AttrKey>,
    slots: FxHashMap<u32, u32>,
    names: FxHashMap<Box<[u8]>, u32>,
}

impl Forest {
    fn attr(&mut self, raw: &[u8]) -> u32 {
        if let Some(i) = self.index_of_raw(raw) {
            return i;
        }
        let i = self.attrs.len() as u32;
        let key = AttrKey::parse(raw);
        match &key {
            AttrKey::Slot(n) => self.slots.insert(*n, i),
            AttrKey::Name(b) => self.names.insert(b.clone(), i),
        };
        self.attrs.push(key);
        i
    }

    /// The dense index of a sample's feature as written (`3`, `entropy`), if some split
    /// tests it.
    pub fn index_of_raw(&self, raw: &[u8]) -> Option<u32> {
        match slot_of(raw) {
            Some(n) => self.slots.get(&n).copied(),
            None => self.names.get(raw).copied(),
        }
    }

    /// Applies one `ML.FOREST.ADD` (after `key`): `treeid` then (path, node) groups. Returns
    /// `Err(NullNodes)` when the edited tree is left incomplete (the caller deletes the key).
    pub fn add(&mut self, treeid: &[u8], args: &[&[u8]]) -> Result<(), MlError> {
        let id = std::str::from_utf8(treeid)
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .ok_or_else(|| MlError::Invalid("tree id", lossy(treeid)))?;
        if id > self.trees.len() {
            return Err(MlError::Generic);
        }
        if args.is_empty() {
            return Err(MlError::Arity("ml.forest.add".into()));
        }
        let mut tree = self.trees.get(id).cloned().unwrap_or_default();
        let mut i = 0;
        while i < args.len() {
            let path = args[i];
            if path.len() > 1 && !path[1..].iter().all(|c| matches!(c, b'l' | b'L' | b'r' | b'R')) {
                return Err(MlError::BadPath(lossy(path)));
            }
            let Some(&ty) = args.get(i + 1) else {
                return Err(MlError::Arity("ml.forest.add".into()));
            };
            let prefix_of =
                |word: &[u8]| !ty.is_empty() && ty.len() <= word.len() && word[..ty.len()].eq_ignore_ascii_case(ty);
            let (node, used) = if prefix_of(b"NUMERIC") || prefix_of(b"CATEGORIC") {
                let (Some(&attr), Some(&val)) = (args.get(i + 2), args.get(i + 3)) else {
                    return Err(MlError::Arity("ml.forest.add".into()));
                };
                let a = self.attr(attr);
                let (kind, thr) = if prefix_of(b"NUMERIC") {
                    (Kind::Numeric, super::parse_num("threshold", val)?)
                } else {
                    let cats: Box<[f64]> = val.split(|&c| c == b':').map(atof).collect();
                    (Kind::Categoric(cats), 0.0)
                };
                (
                    Node {
                        kind,
                        attr: a,
                        thr,
                        left: NIL,
                        right: NIL,
                    },
                    4,
                )
            } else if prefix_of(b"LEAF") {
                let Some(&val) = args.get(i + 2) else {
                    return Err(MlError::Arity("ml.forest.add".into()));
                };
                let value = super::parse_num("leaf value", val)?;
                let (stats, used) = match args.get(i + 3) {
                    Some(s) if s.eq_ignore_ascii_case(b"STATS") => {
                        let Some(&list) = args.get(i + 4) else {
                            return Err(MlError::Arity("ml.forest.add".into()));
                        };
                        let stats = list
                            .split(|&c| c == b':')
                            .map(|s| super::parse_num("leaf statistics", s))
                            .collect::<Result<Box<[f64]>, _>>()?;
                        (Some(stats), 5)
                    }
                    _ => (None, 3),
                };
                (
                    Node {
                        kind: Kind::Leaf(stats),
                        attr: 0,
                        thr: value,
                        left: NIL,
                        right: NIL,
                    },
                    used,
                )
            } else {
                return Err(MlError::BadNodeType(lossy(ty)));
            };
            tree.set(path, node)?;
            i += used;
        }
        if !tree.complete() {
            return Err(MlError::NullNodes);
        }
        tree.compact();
        if id == self.trees.len() {
            self.trees.push(tree);
        } else {
            self.trees[id] = tree;
        }
        Ok(())
    }

    /// Evaluates the forest on the dense feature vector `x` (`x.len() == attrs.len()`).
    pub fn run(&self, x: &[f64], mode: Mode) -> Result<f64, MlError> {
        if self.trees.is_empty() {
            return Err(MlError::Empty);
        }
        assert_eq!(x.len(), self.attrs.len(), "dense feature vector of the wrong length");
        match mode {
            Mode::Regression => {
                let mut sum = 0.0;
                for t in &self.trees {
                    sum += t.leaf(x).thr;
                }
                Ok(sum / self.trees.len() as f64)
            }
            Mode::Classification => {
                // (class, total) pairs: few classes, a linear list beats a map.
                let mut votes: smallvec_lite::Votes = Default::default();
                for t in &self.trees {
                    let leaf = t.leaf(x);
                    match &leaf.kind {
                        Kind::Leaf(Some(stats)) => {
                            let total: f64 = stats.iter().sum();
                            if total > 0.0 {
                                for (c, n) in stats.iter().enumerate() {
                                    votes.add(c as i64, n / total);
                                }
                            }
                        }
                        _ => votes.add(leaf.thr as i64, 1.0),
                    }
                }
                Ok(votes.winner() as f64)
            }
        }
    }
}

/// The vote tally of one classification, without allocating for up to 16 classes.
mod smallvec_lite {
    #[derive(Default)]
    pub(super) struct Votes {
        inline: [(i64, f64); 16],
        n: usize,
        more: Vec<(i64, f64)>,
    }

    impl Votes {
        pub(super) fn add(&mut self, class: i64, w: f64) {
            if let Some(e) = self.inline[..self.n]
                .iter_mut()
                .chain(self.more.iter_mut())
                .find(|(c, _)| *c == class)
            {
                e.1 += w;
            } else if self.n < self.inline.len() {
                self.inline[self.n] = (class, w);
                self.n += 1;
            } else {
                self.more.push((class, w));
            }
        }

        /// The class with the largest total; ties go to the lowest class.
        pub(super) fn winner(&self) -> i64 {
            let mut best: Option<(i64, f64)> = None;
            for &(c, w) in self.inline[..self.n].iter().chain(self.more.iter()) {
                best = match best {
                    Some((bc, bw)) if bw > w || (bw == w && bc < c) => Some((bc, bw)),
                    _ => Some((c, w)),
                };
            }
            best.map_or(0, |b| b.0)
        }
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
