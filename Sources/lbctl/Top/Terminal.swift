import Dispatch
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// The terminal of `lbctl top`: keys read one at a time without echo (raw mode), restored on exit
/// and on SIGINT, and SIGINT turned into a request to quit.
final class Terminal {
    #if canImport(Glibc) || canImport(Musl) || canImport(Darwin)
        /// The settings to restore (`nil` when standard input is not a terminal).
        private var saved: termios?
    #endif
    /// Set by `q` or SIGINT.
    private let quit = QuitFlag()
    private var signalSource: (any DispatchSourceSignal)?

    /// Set once, from the signal handler's queue or the reading task.
    private final class QuitFlag: Sendable {
        let value = Atomic<Bool>(false)
    }

    /// Puts standard input in raw mode (no line buffering, no echo; Ctrl-C still interrupts) when
    /// it is a terminal, and turns SIGINT into a quit.
    init() {
        #if canImport(Glibc) || canImport(Musl) || canImport(Darwin)
            var original = termios()
            if isatty(STDIN_FILENO) == 1, tcgetattr(STDIN_FILENO, &original) == 0 {
                var raw = original
                raw.c_lflag &= ~tcflag_t(ICANON | ECHO)
                withUnsafeMutableBytes(of: &raw.c_cc) { cc in
                    cc[Int(VMIN)] = 0
                    cc[Int(VTIME)] = 0
                }
                tcsetattr(STDIN_FILENO, TCSANOW, &raw)
                saved = original
            } else {
                saved = nil
            }
            signal(SIGINT, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
            let quit = self.quit
            source.setEventHandler { quit.value.store(true, ordering: .relaxed) }
            source.resume()
            signalSource = source
        #endif
    }

    /// Whether `q` was pressed or SIGINT came. Reads the keys typed so far (never blocks).
    var quitRequested: Bool {
        #if canImport(Glibc) || canImport(Musl) || canImport(Darwin)
            if saved != nil {
                var byte: UInt8 = 0
                while read(STDIN_FILENO, &byte, 1) == 1 {
                    if byte == UInt8(ascii: "q") || byte == UInt8(ascii: "Q") { quit.value.store(true, ordering: .relaxed) }
                }
            }
        #endif
        return quit.value.load(ordering: .relaxed)
    }

    /// Restores the terminal's settings and SIGINT's default action. Idempotent.
    func restore() {
        #if canImport(Glibc) || canImport(Musl) || canImport(Darwin)
            if var original = saved {
                tcsetattr(STDIN_FILENO, TCSANOW, &original)
                saved = nil
            }
            signalSource?.cancel()
            signalSource = nil
            signal(SIGINT, SIG_DFL)
        #endif
    }

    deinit { restore() }
}
