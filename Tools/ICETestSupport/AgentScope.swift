public import ICE

/// Runs `body` with `count` agents on one fresh `GLibExecutor`, then closes the agents (releasing
/// relays) and stops the executor, whether `body` succeeded or not.
public func withICEAgents<T: Sendable>(
    count: Int, configuration: ICEConfiguration, executor: GLibExecutor? = nil,
    _ body: @Sendable ([ICEAgent]) async throws -> T
) async throws -> T {
    let ownsExecutor = executor == nil
    let executor = try executor ?? GLibExecutor(name: "ice-test")
    let agents = try (0..<count).map { _ in try ICEAgent(configuration: configuration, executor: executor) }
    let result: Result<T, any Error>
    do {
        result = .success(try await body(agents))
    } catch {
        result = .failure(error)
    }
    for agent in agents { await agent.close() }
    if ownsExecutor { executor.shutdown() }
    return try result.get()
}

/// A loopback-only configuration: host candidates on 127.0.0.1, nothing else.
public func loopbackConfiguration() -> ICEConfiguration {
    ICEConfiguration(localAddresses: [IPAddress("127.0.0.1")!])
}
