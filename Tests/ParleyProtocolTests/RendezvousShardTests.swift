import ParleyProtocol
import Sodium
import Testing

/// §4.1's shard key in the request path (the key's value itself: protocol-v1-keys.json).
@Suite("Rendezvous shard key")
struct RendezvousShardTests {
    static let key = "etbfvdfgwu752"

    @Test(
        arguments: [
            ("/r/etbfvdfgwu752", "etbfvdfgwu752"),
            ("/parley/r/etbfvdfgwu752", "etbfvdfgwu752"),
            ("/parley/r/etbfvdfgwu752?x=1", "etbfvdfgwu752"),
            ("/a/r/r/234567abcdefg", "234567abcdefg"),
            ("http://rv.example.org/r/etbfvdfgwu752", "etbfvdfgwu752"),
            ("/", nil), ("/r/", nil), ("/r", nil), ("/parley", nil),
            ("/r/ETBFVDFGWU752", nil), ("/r/etbfvdfgwu75", nil), ("/r/etbfvdfgwu7521", nil), ("/r/etbfvdfgwu751", nil),
            ("/x/etbfvdfgwu752", nil), ("/r/etbfvdfgwu752/", nil), ("r/etbfvdfgwu752", nil),
            ("/?/r/etbfvdfgwu752", nil),
        ] as [(String, String?)])
    func requestTargetsCarryAKeyOnlyInTheirLastSegment(target: String, key: String?) {
        #expect(RendezvousShard.key(inRequestTarget: target).map(String.init) == key)
    }

    @Test func everyRoomHasAKeyItsPathCarries() {
        for _ in 0..<50 {
            let room = Ed25519.KeyPair.generate().publicKey
            let key = RendezvousShard.key(roomID: room)
            #expect(key.count == RendezvousShard.keyLength)
            for invitePath in ["/", "/parley", "/a/b/"] {
                let path = RendezvousShard.path(invitePath: invitePath, roomID: room)
                #expect(RendezvousShard.key(inRequestTarget: path).map(String.init) == key)
            }
        }
    }
}
