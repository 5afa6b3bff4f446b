import ControlAPI
import MeetingCore
import MeetingSimulation
import Testing

/// Whole meetings of `MeetingCore`s on a virtual clock (`MeetingSimulation`): real envelopes and
/// sessions over simulated rendezvous and paths, seconds or minutes of meeting in a fraction of a
/// second of real time each (the sixteen-member one in about two, in a debug build).
/// Serialized: each scenario is seconds of CPU on the concurrency pool (as wide as the machine has
/// cores); one at a time leaves the rest of the pool to the tests that wait on real threads.
@Suite("Meeting scenarios (simulated)", .serialized)
struct MeetingScenarioTests {
    /// `count` nodes named after the alphabet, joined at once.
    static func meeting(
        _ count: Int, seed: UInt64 = 1, world: MeetingSimulation.World = .init(),
        options: MeetingSimulation.NodeOptions = .init()
    ) -> (MeetingSimulation, [MeetingSimulation.NodeID]) {
        let sim = MeetingSimulation(seed: seed, world: world)
        let ids = (0..<count).map { sim.addNode(Self.names[$0], options) }
        sim.joinAll()
        return (sim, ids)
    }

    static let names = [
        "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "niaj",
        "olivia", "peggy", "rupert", "sybil", "trent", "victor",
    ]

    /// Everyone hears everyone else now.
    static func everyoneHears(_ sim: MeetingSimulation, _ ids: [MeetingSimulation.NodeID]) -> Bool {
        ids.allSatisfy { listener in ids.allSatisfy { speaker in speaker == listener || sim.hears(listener, speaker) } }
    }

    static func linkEvents(_ sim: MeetingSimulation, at node: MeetingSimulation.NodeID, about peer: String) -> [String]
    {
        sim.events(of: node).filter { $0.kind == .link && $0.name == peer }.compactMap { $0.state?.rawValue }
    }

    @Test(arguments: [2, 3, 4])
    func membersJoiningTogetherAllConnectAndAgreeOnTheCode(count: Int) {
        let (sim, ids) = Self.meeting(count)
        #expect(sim.run(until: .seconds(3)) { sim.allLinksUp() }, "links: \(ids.map { sim.linkStates(of: $0) })")
        #expect(sim.elapsed < .seconds(1), "up after \(sim.elapsed)")
        sim.run(for: .seconds(1))
        #expect(Self.everyoneHears(sim, ids))
        let codes = Set(ids.map { sim.securityCode(of: $0) })
        #expect(codes.count == 1)
        #expect(ids.allSatisfy { sim.verification(of: $0).members.count == count })
    }

    /// Glare: eight members started at the same instant, every pair's handshakes crossing.
    @Test func eightMembersStartedAtOnce() {
        let (sim, ids) = Self.meeting(8, seed: 8)
        #expect(sim.run(until: .seconds(5)) { sim.allLinksUp() })
        sim.run(for: .seconds(1))
        #expect(Self.everyoneHears(sim, ids))
    }

    @Test func aLateJoinerConnectsToEveryone() {
        let (sim, ids) = Self.meeting(3)
        #expect(sim.run(until: .seconds(3)) { sim.allLinksUp() })
        let dave = sim.addNode("dave")
        sim.join(dave)
        let joinedAt = sim.elapsed
        #expect(sim.run(until: .seconds(3)) { sim.allLinksUp() })
        #expect(sim.elapsed - joinedAt < .seconds(1))
        for id in ids {
            #expect(sim.events(of: id).contains { $0.kind == .peerJoined && $0.name == "dave" })
        }
    }

    /// A member who leaves says so over every session: the others drop the link at once instead
    /// of after the liveness timeout, and the security code changes with the membership.
    @Test func aMemberWhoLeavesIsGoneAtOnce() {
        let (sim, ids) = Self.meeting(3)
        #expect(sim.run(until: .seconds(3)) { sim.allLinksUp() })
        sim.run(for: .seconds(1))
        let codeBefore = sim.securityCode(of: ids[0])
        sim.leave(ids[2])
        #expect(sim.run(until: .milliseconds(200)) { sim.linkStates(of: ids[0])["carol"] == nil })
        #expect(sim.linkStates(of: ids[1])["carol"] == nil)
        #expect(sim.ending(of: ids[2]) == (true, nil))
        #expect(
            sim.events(of: ids[0]).contains {
                $0.kind == .peerLeft && $0.name == "carol" && $0.message == "left the meeting"
            })
        sim.run(for: .seconds(1))
        #expect(sim.securityCode(of: ids[0]) != codeBefore)
        #expect(sim.securityCode(of: ids[0]) == sim.securityCode(of: ids[1]))
        #expect(sim.allLinksUp(among: [ids[0], ids[1]]))
    }

    /// A member that crashes says nothing, but its rendezvous connection closes at once: the
    /// others drop it as soon as they stop hearing it (about 2 s), not after a long timeout.
    @Test func aCrashedMemberIsRemovedAsSoonAsItIsSilent() {
        let (sim, ids) = Self.meeting(3)
        #expect(sim.run(until: .seconds(3)) { sim.allLinksUp() })
        sim.run(for: .seconds(1))
        sim.crash(ids[2])
        let crashedAt = sim.elapsed
        #expect(
            sim.run(until: .seconds(12)) {
                sim.linkStates(of: ids[0])["carol"] == nil && sim.linkStates(of: ids[1])["carol"] == nil
            })
        #expect(sim.elapsed - crashedAt < .seconds(3))
        #expect(Self.linkEvents(sim, at: ids[0], about: "carol").suffix(2) == ["up", "gone"])
        #expect(sim.allLinksUp(among: [ids[0], ids[1]]))
    }

    /// A member frozen for 4 s (SIGSTOP) is lost, the pair's lead restarts ICE, and once it goes on
    /// the link is up again without being removed.
    @Test func aFrozenMemberComesBackThroughAnICERestart() {
        let (sim, ids) = Self.meeting(3)
        #expect(sim.run(until: .seconds(3)) { sim.allLinksUp() })
        sim.freeze(ids[1], for: .seconds(4))
        sim.run(for: .seconds(4))
        #expect(sim.run(until: .seconds(6)) { sim.allLinksUp() }, "\(ids.map { sim.linkStates(of: $0) })")
        let seen = Self.linkEvents(sim, at: ids[0], about: "bob")
        #expect(seen.contains("lost") && seen.contains("restarting") && !seen.contains("gone"), "\(seen)")
        sim.run(for: .seconds(1))
        #expect(Self.everyoneHears(sim, ids))
    }

    /// The rendezvous going away (and coming back) does not interrupt audio between members.
    @Test func aRendezvousRestartDoesNotInterruptAudio() {
        let (sim, ids) = Self.meeting(3)
        #expect(sim.run(until: .seconds(3)) { sim.allLinksUp() })
        sim.run(for: .seconds(1))
        let restartAt = sim.now
        sim.restartRendezvous(downtime: .seconds(5))
        sim.run(for: .seconds(8))
        for listener in ids {
            for speaker in ids where speaker != listener {
                #expect(sim.longestGap(listener, speaker, since: restartAt) <= .milliseconds(300))
            }
        }
        #expect(sim.allLinksUp())
        for id in ids {
            let meeting = sim.events(of: id).filter { $0.kind == .meeting }.compactMap(\.state)
            #expect(meeting.contains(.rendezvousReconnecting) && meeting.last == .rendezvousConnected, "\(meeting)")
        }
    }

    @Test func aFullMeetingRefusesTheNewcomerClearly() {
        var world = MeetingSimulation.World()
        world.maxMembers = 3
        let (sim, ids) = Self.meeting(3, world: world)
        #expect(sim.run(until: .seconds(3)) { sim.allLinksUp() })
        let dave = sim.addNode("dave")
        sim.join(dave)
        sim.run(for: .seconds(1))
        let ending = sim.ending(of: dave)
        #expect(ending.ended && ending.failure?.contains("full") == true, "\(ending)")
        #expect(ids.allSatisfy { sim.linkStates(of: $0)["dave"] == nil })
    }

    /// An invite with another secret is another room: its holder meets nobody and nobody sees it.
    @Test func aWrongSecretMeetsNobody() {
        let (sim, ids) = Self.meeting(2)
        var forged = MeetingSimulation.NodeOptions()
        forged.wrongSecret = true
        let eve = sim.addNode("eve", forged)
        sim.join(eve)
        sim.run(for: .seconds(3))
        #expect(sim.allLinksUp(among: ids))
        #expect(sim.linkStates(of: eve).isEmpty)
        #expect(ids.allSatisfy { sim.linkStates(of: $0)["eve"] == nil })
    }

    /// A member whose public address changes (a renumbered NAT) has its links back after a
    /// restart, without leaving.
    @Test func aMemberWhoseAddressChangesReconnects() {
        let (sim, ids) = Self.meeting(3)
        #expect(sim.run(until: .seconds(3)) { sim.allLinksUp() })
        sim.run(for: .seconds(1))
        let changedAt = sim.now
        sim.changeAddress(ids[1])
        #expect(sim.run(until: .seconds(3)) { sim.linkStates(of: ids[0])["bob"] != .up })
        #expect(sim.run(until: .seconds(8)) { Self.everyoneHears(sim, ids) && sim.allLinksUp() })
        let gap = sim.longestGap(ids[0], ids[1], since: changedAt)
        #expect(gap < .seconds(5), "gap \(gap)")
    }

    /// A pair whose first checks fail (a firewall, gone later) keeps being retried by the lead.
    @Test func aPairThatCannotConnectIsRetriedUntilItCan() {
        let sim = MeetingSimulation(seed: 3)
        let alice = sim.addNode("alice")
        let bob = sim.addNode("bob")
        sim.partition(alice, bob)
        sim.joinAll()
        sim.run(for: .seconds(8))
        #expect(sim.linkStates(of: alice)["bob"] == .failed)
        sim.heal(alice, bob)
        #expect(sim.run(until: .seconds(20)) { sim.allLinksUp() })
    }

    /// Loss on one member's path makes its REPORTs ask for protection: the sender's encoder
    /// protects against the worst peer's loss and relaxes once it is gone (§9.3, §10.1).
    @Test func reportedLossDrivesTheSendersProtection() {
        var world = MeetingSimulation.World()
        world.mediaInterval = .milliseconds(20)
        let (sim, ids) = Self.meeting(3, world: world)
        #expect(sim.run(until: .seconds(3)) { sim.allLinksUp() })
        sim.run(for: .seconds(2))
        #expect(sim.encoderLoss(of: ids[0]) == 0)
        sim.setLoss(from: ids[0], to: ids[2], 0.1)
        #expect(sim.run(until: .seconds(6)) { sim.encoderLoss(of: ids[0]) >= 0.05 }, "\(sim.encoderLoss(of: ids[0]))")
        #expect(sim.encoderLoss(of: ids[1]) < 0.05)
        sim.setLoss(from: ids[0], to: ids[2], 0)
        #expect(sim.run(until: .seconds(6)) { sim.encoderLoss(of: ids[0]) < 0.01 })
    }

    /// A silent member (DTX: nothing to send) still has its links up: its peers' REPORTs are the
    /// proof the path works (§10.1).
    @Test func aSilentMemberIsUpWithEveryone() {
        let sim = MeetingSimulation(seed: 5)
        var quiet = MeetingSimulation.NodeOptions()
        quiet.talking = false
        let ids = [sim.addNode("alice"), sim.addNode("bob"), sim.addNode("carol", quiet)]
        sim.joinAll()
        #expect(sim.run(until: .seconds(3)) { sim.allLinksUp() })
        sim.run(for: .seconds(3))
        #expect(sim.allLinksUp())
        #expect(!sim.hears(ids[0], ids[2]) && sim.hears(ids[2], ids[0]))
    }

    /// Nobody talks (DTX holds all media back): each member's REPORTs go to its links together
    /// every 250 ms, and the one that closes a link's loss interval is one of them — four a
    /// second per link, not a fifth on each link's own schedule (each one wakes the sender and
    /// the receiver).
    @Test func silentMembersReportFourTimesASecondPerLink() {
        var quiet = MeetingSimulation.NodeOptions()
        quiet.talking = false
        let (sim, ids) = Self.meeting(4, seed: 31, options: quiet)
        #expect(sim.run(until: .seconds(3)) { sim.allLinksUp() })
        sim.run(for: .seconds(1))
        let before = ids.map { sim.count("sendReport", at: $0) }
        sim.run(for: .seconds(10))
        for (id, count) in zip(ids, before) {
            let sent = sim.count("sendReport", at: id) - count
            #expect((118...122).contains(sent), "\(sim.name(of: id)) sent \(sent) REPORTs to 3 links in 10 s")
        }
    }

    /// With media flowing (a packet per 20 ms on each link), packets wake a member's meeting only
    /// for what they say (a REPORT a second per link) and its own REPORT timer: that they still
    /// come is held back until the meeting wakes anyway. Links stay up; everyone hears everyone.
    @Test func flowingMediaWakesTheMeetingOnlyForWhatPacketsSay() {
        var world = MeetingSimulation.World()
        world.mediaInterval = .milliseconds(20)
        let (sim, ids) = Self.meeting(4, seed: 32, world: world)
        #expect(sim.run(until: .seconds(3)) { sim.allLinksUp() })
        sim.run(for: .seconds(1))
        let before = ids.map { sim.ownInputs(at: $0) }
        sim.run(for: .seconds(10))
        for (id, count) in zip(ids, before) {
            let perLinkSecond = Double(sim.ownInputs(at: id) - count) / 30
            #expect(perLinkSecond < 3, "\(sim.name(of: id)): \(perLinkSecond) inputs per link and second")
        }
        #expect(sim.allLinksUp() && Self.everyoneHears(sim, ids))
    }

    /// Sixteen members joining at once: all 240 directed links up, everyone heard.
    @Test func sixteenMembersJoiningAtOnce() {
        var world = MeetingSimulation.World()
        world.mediaInterval = .milliseconds(250)
        let (sim, ids) = Self.meeting(16, seed: 16, world: world)
        #expect(sim.run(until: .seconds(10)) { sim.allLinksUp() })
        #expect(sim.elapsed < .seconds(2), "all up after \(sim.elapsed)")
        sim.run(for: .seconds(1))
        #expect(Self.everyoneHears(sim, ids))
        #expect(Set(ids.map { sim.securityCode(of: $0) }).count == 1)
    }
}
