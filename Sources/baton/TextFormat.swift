import Foundation

/// Text output helpers: aligned tables, "3m ago", "$0.0123".
enum TextFormat {
    /// One cell: its plain text (for the width) and what is printed (maybe coloured).
    struct Cell: ExpressibleByStringLiteral {
        var plain: String
        var shown: String

        init(_ plain: String, shown: String? = nil) {
            self.plain = plain
            self.shown = shown ?? plain
        }

        init(stringLiteral value: String) { self.init(value) }
    }

    /// Columns aligned on the widest cell; the last column is not padded. Header in bold when colour is on.
    static func table(_ header: [String], _ rows: [[Cell]], printer: Printer) -> String {
        var widths = header.map(\.count)
        for row in rows {
            for (index, cell) in row.enumerated() where index < widths.count {
                widths[index] = max(widths[index], cell.plain.count)
            }
        }
        func line(_ cells: [Cell]) -> String {
            cells.enumerated()
                .map { index, cell in
                    index == cells.count - 1 ? cell.shown : cell.shown + String(repeating: " ", count: widths[index] - cell.plain.count)
                }
                .joined(separator: "  ")
                .replacing(/\ +$/, with: "")
        }
        let headerLine = line(header.map { Cell($0) })
        return ([printer.paint(headerLine, "1")] + rows.map(line)).joined(separator: "\n")
    }

    /// Parses the ISO-8601 timestamps of the views (with or without fractional seconds).
    static func date(_ text: String?) -> Date? {
        guard let text, !text.isEmpty else { return nil }
        return (try? Date.ISO8601FormatStyle(includingFractionalSeconds: true).parse(text))
            ?? (try? Date.ISO8601FormatStyle().parse(text))
    }

    /// "just now", "42s ago", "3m ago", "5h ago", "2d ago"; "in 3m" for the future; "-" when absent.
    static func ago(_ text: String?, now: Date = Date()) -> String {
        guard let date = date(text) else { return "-" }
        return relative(seconds: now.timeIntervalSince(date))
    }

    static func relative(seconds: Double) -> String {
        let future = seconds < 0
        let span = abs(seconds)
        if span < 1 { return "just now" }
        let amount = duration(span)
        return future ? "in \(amount)" : "\(amount) ago"
    }

    /// A span in its largest sensible unit: 42s, 3m, 5h, 2d.
    static func duration(_ seconds: Double) -> String {
        switch seconds {
        case ..<60: "\(Int(seconds))s"
        case ..<3600: "\(Int(seconds / 60))m"
        case ..<86_400: "\(Int(seconds / 3600))h"
        default: "\(Int(seconds / 86_400))d"
        }
    }

    /// US dollars: four decimals below $100 ($0.0123), two from there.
    static func cost(_ usd: Double) -> String {
        usd < 100 ? String(format: "$%.4f", usd) : String(format: "$%.2f", usd)
    }

    /// Cuts `text` to `limit` characters with an ellipsis, on one line.
    static func clip(_ text: String, _ limit: Int) -> String {
        let flat = text.replacingOccurrences(of: "\n", with: " ")
        return flat.count <= limit ? flat : String(flat.prefix(limit - 1)) + "…"
    }
}
