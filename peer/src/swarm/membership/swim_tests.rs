//! [`SwimNode`] on a simulated network: instant delivery, a virtual clock.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rand::{Rng, SeedableRng};

use super::*;
use crate::swarm::peer_set::MembershipTiming;

const PERIOD: Duration = Duration::from_millis(100);
const STEP: Duration = Duration::from_millis(10);

fn timing() -> GossipTiming {
    GossipTiming::from(&MembershipTiming {
        heartbeat: PERIOD,
        dead_after: Duration::from_millis(400),
        hello_timeout: Duration::from_millis(300),
        startup_wait: Duration::from_millis(500),
    })
}

fn id(i: usize) -> MemberId {
    let peer = SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 7468));
    MemberId {
        peer,
        gossip_port: 7469,
        generation: 1,
    }
}

/// Nodes `0..n` on a lossless network; `stopped` ones neither send nor
/// receive.
struct Net {
    nodes: Vec<SwimNode>,
    by_addr: HashMap<SocketAddr, usize>,
    stopped: HashSet<usize>,
    now: Instant,
    sent: u64,
}

impl Net {
    /// `n` nodes, each announcing to node 0.
    fn new(n: usize) -> Net {
        Net::with_late_joiners(n, 0)
    }

    /// `n` nodes, the last `late` of which have not joined yet ([`Net::join`]).
    fn with_late_joiners(n: usize, late: usize) -> Net {
        let now = Instant::now();
        let nodes: Vec<SwimNode> = (0..n)
            .map(|i| SwimNode::new(id(i), timing(), i as u64))
            .collect();
        let by_addr = (0..n).map(|i| (id(i).gossip_addr(), i)).collect();
        let mut net = Net {
            nodes,
            by_addr,
            stopped: HashSet::new(),
            now,
            sent: 0,
        };
        for i in 1..n - late {
            net.nodes[i].announce(MemberId::seed(id(0).peer, 7469), now);
        }
        net.deliver();
        net
    }

    /// Node `i` announces itself to node 0.
    fn join(&mut self, i: usize) {
        let now = self.now;
        self.nodes[i].announce(MemberId::seed(id(0).peer, 7469), now);
        self.deliver();
    }

    fn deliver(&mut self) {
        for _ in 0..100 {
            let mut quiet = true;
            for i in 0..self.nodes.len() {
                if self.stopped.contains(&i) {
                    self.nodes[i].take_outbox();
                    continue;
                }
                let from = self.nodes[i].identity().gossip_addr();
                for (to, payload) in self.nodes[i].take_outbox() {
                    quiet = false;
                    self.sent += 1;
                    if let Some(&j) = self.by_addr.get(&to) {
                        if !self.stopped.contains(&j) {
                            let _ = self.nodes[j].receive(&payload, from, self.now);
                        }
                    }
                }
            }
            if quiet {
                return;
            }
        }
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        while self.now < until {
            self.now += STEP;
            for i in 0..self.nodes.len() {
                if !self.stopped.contains(&i) {
                    self.nodes[i].fire_due(self.now);
                }
            }
            self.deliver();
        }
    }

    /// Runs until `done` holds; returns the virtual time it took.
    fn run_until(&mut self, limit: Duration, done: impl Fn(&Net) -> bool) -> Duration {
        let start = self.now;
        while !done(self) {
            assert!(self.now - start < limit, "not within {limit:?}");
            self.run_for(STEP);
        }
        self.now - start
    }

    fn state_of(&self, viewer: usize, of: usize) -> Option<MemberState> {
        self.nodes[viewer]
            .members()
            .into_iter()
            .find(|(a, _)| *a == id(of).peer)
            .map(|(_, s)| s)
    }

    fn alive_seen_by(&self, viewer: usize) -> usize {
        self.nodes[viewer]
            .members()
            .iter()
            .filter(|(_, s)| *s == MemberState::Alive)
            .count()
    }

    fn all_see_all_alive(&self) -> bool {
        let n = self.nodes.len();
        (0..n).all(|i| {
            self.nodes[i]
                .members()
                .iter()
                .filter(|(_, s)| *s == MemberState::Alive)
                .count()
                == n - 1
        })
    }
}

#[test]
fn fifty_members_converge_and_send_o_of_n_datagrams_per_period() {
    let n = 50;
    let mut net = Net::new(n);
    let took = net.run_until(Duration::from_secs(20), Net::all_see_all_alive);
    eprintln!("50 simulated members converged in {took:?} of virtual time");
    // Let the join updates drain, then count a steady stretch.
    net.run_for(PERIOD * 40);
    let before = net.sent;
    let periods = 50;
    net.run_for(PERIOD * periods);
    let per_period = (net.sent - before) as f64 / periods as f64;
    eprintln!(
        "{per_period:.1} datagrams per period for {n} members (heartbeats: {})",
        n * (n - 1)
    );
    assert!(per_period <= 4.0 * n as f64, "{per_period}");
    assert!(net.all_see_all_alive());
}

#[test]
fn a_late_joiner_sees_a_cluster_larger_than_one_feed_at_once() {
    let n = 200;
    let mut net = Net::with_late_joiners(n, 1);
    let formed = |net: &Net| (0..n - 1).all(|i| net.alive_seen_by(i) >= n - 2);
    net.run_until(Duration::from_secs(20), formed);
    net.run_for(PERIOD * 20);
    let joiner = n - 1;
    net.join(joiner);
    // One SWIM feed carries ~60 members; the member list brings the rest.
    assert_eq!(net.alive_seen_by(joiner), n - 1);
    let took = net.run_until(Duration::from_secs(10), Net::all_see_all_alive);
    assert!(took <= PERIOD * 5, "{took:?}");
}

#[test]
fn a_silent_member_is_suspected_then_declared_down_and_a_leaving_one_at_once() {
    let mut net = Net::new(5);
    net.run_until(Duration::from_secs(10), Net::all_see_all_alive);
    net.stopped.insert(4);
    let suspected = net.run_until(Duration::from_secs(5), |net| {
        (0..4).all(|i| net.state_of(i, 4) != Some(MemberState::Alive))
    });
    // Probed within about a period, suspected one period later, spread in
    // gossip rounds: well within the 3 periods + dead_after of heartbeats.
    assert!(
        suspected <= PERIOD * 3 + timing().dead_after,
        "{suspected:?}"
    );
    let down = net.run_until(Duration::from_secs(5), |net| {
        (0..4).all(|i| net.state_of(i, 4) == Some(MemberState::Down))
    });
    assert!(down <= timing().suspect_to_down + PERIOD * 3, "{down:?}");
    // A leave is known to everyone without waiting for probes.
    let now = net.now;
    net.nodes[3].leave(now);
    net.deliver();
    for i in 0..3 {
        assert_eq!(net.state_of(i, 3), Some(MemberState::Down), "node {i}");
    }
}

#[test]
fn a_restarted_member_replaces_its_old_identity() {
    let mut net = Net::new(3);
    net.run_until(Duration::from_secs(10), Net::all_see_all_alive);
    net.stopped.insert(2);
    net.run_until(Duration::from_secs(5), |net| {
        net.state_of(0, 2) == Some(MemberState::Down)
    });
    // Same peer id and port, a later generation.
    let restarted = MemberId {
        generation: 2,
        ..id(2)
    };
    net.nodes[2] = SwimNode::new(restarted.clone(), timing(), 99);
    net.stopped.remove(&2);
    let now = net.now;
    net.nodes[2].announce(MemberId::seed(id(0).peer, 7469), now);
    net.deliver();
    net.run_until(Duration::from_secs(5), Net::all_see_all_alive);
    let renamed = net.nodes[0]
        .take_changes()
        .into_iter()
        .any(|c| matches!(c, Change::Renamed { to, .. } if to == restarted));
    assert!(renamed);
}

#[test]
fn the_member_table_is_capped_and_refusals_are_counted() {
    let now = Instant::now();
    let mut node = SwimNode::with_cap(id(0), timing(), 1, 100);
    node.apply((1..=150).map(|i| Member::alive(id(i))).collect(), now);
    assert_eq!(node.table_len(), 100);
    assert_eq!(node.take_refused(), 50);
    // The refused ones were never reported up.
    let ups = node
        .take_changes()
        .iter()
        .filter(|c| matches!(c, Change::Up(_)))
        .count();
    assert_eq!(ups, 100);
    // Known members still update; new ones are still refused.
    node.apply(
        vec![
            Member::new(id(1), 1, State::Suspect),
            Member::alive(id(151)),
        ],
        now,
    );
    assert_eq!(node.table_len(), 100);
    assert_eq!(node.take_refused(), 1);
    assert!(node.members().contains(&(id(1).peer, MemberState::Suspect)));
    // Timers stay bounded by the table, however long it runs.
    for k in 1..200 {
        node.fire_due(now + PERIOD * k);
    }
    assert!(node.timer_count() <= 2 * 100 + 8, "{}", node.timer_count());
}

#[test]
fn a_thousand_members_hold_well_under_a_megabyte() {
    use crate::swarm::membership::alloc_meter::held_bytes;
    let now = Instant::now();
    let before = held_bytes();
    let mut node = SwimNode::new(id(0), timing(), 1);
    node.apply((1..=1000).map(|i| Member::alive(id(i))).collect(), now);
    node.fire_due(now + PERIOD * 3);
    let held = held_bytes() - before;
    eprintln!("SWIM state of 1,000 members: {held} bytes");
    assert_eq!(node.member_count(), 1000);
    assert!(held < 1 << 20, "{held} bytes");
}

#[test]
fn random_and_mangled_payloads_never_panic() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut net = Net::new(3);
    net.run_until(Duration::from_secs(5), Net::all_see_all_alive);
    // Real payloads to mangle: what node 1 sends in a few periods.
    let mut samples = Vec::new();
    for _ in 0..30 {
        net.now += STEP;
        net.nodes[1].fire_due(net.now);
        samples.extend(net.nodes[1].take_outbox().into_iter().map(|(_, p)| p));
    }
    assert!(!samples.is_empty());
    let now = net.now;
    let from = id(1).gossip_addr();
    let target = &mut net.nodes[0];
    for round in 0..20_000 {
        let bytes: Vec<u8> = if round % 2 == 0 {
            let len = rng.gen_range(0..=MAX_PAYLOAD + 100);
            (0..len).map(|_| rng.gen()).collect()
        } else {
            let mut b = samples[round % samples.len()].to_vec();
            for _ in 0..rng.gen_range(1..4) {
                let at = rng.gen_range(0..b.len());
                b[at] = rng.gen();
            }
            b.truncate(rng.gen_range(0..=b.len()));
            b
        };
        let _ = target.receive(&bytes, from, now);
        target.fire_due(now);
        target.take_outbox();
    }
    assert!(target.table_len() <= MAX_MEMBERS);
}
