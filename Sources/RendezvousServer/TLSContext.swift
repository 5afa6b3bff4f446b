internal import NIOSSL

#if canImport(Glibc)
import Glibc
#endif

extension RendezvousServerConfiguration.TLSFiles {
    /// The server's TLS context; each error names the file and what is wrong with it.
    func makeServerContext() throws(RendezvousServerError) -> NIOSSLContext {
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMFile(certificateChainPath)
        } catch {
            throw .invalidConfiguration("cannot read a PEM certificate from \(Self.problem(certificateChainPath))")
        }
        guard !chain.isEmpty else { throw .invalidConfiguration("no certificate in \(certificateChainPath)") }
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(file: privateKeyPath, format: .pem)
        } catch {
            throw .invalidConfiguration("cannot read a PEM private key from \(Self.problem(privateKeyPath))")
        }
        do {
            return try NIOSSLContext(
                configuration: .makeServerConfiguration(
                    certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key)))
        } catch {
            throw .invalidConfiguration(
                "the private key in \(privateKeyPath) does not belong to the certificate in \(certificateChainPath)")
        }
    }

    /// `path` and why it could not be read: the system's reason, or that it holds no PEM.
    private static func problem(_ path: String) -> String {
        access(path, R_OK) == 0 ? "\(path): not PEM" : "\(path): \(String(cString: strerror(errno)))"
    }
}
