import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// The dashboard at `/`: plain HTML, CSS and JavaScript kept as package resources of BatonHTTP
/// (`Sources/BatonHTTP/Dashboard`), read once when the server starts and served from memory. No build step, no
/// CDN: a `Content-Security-Policy` of `'self'` makes the browser refuse any request to another host.
///
/// The files need no token; the JSON API they call keeps its authentication (the page sends the token the user
/// typed as `Authorization: Bearer`).
struct Dashboard: Sendable {
    struct File: Sendable {
        var contentType: String
        var body: [UInt8]
    }

    /// Path (`/index.html`, `/app.js`, …) → file.
    let files: [String: File]

    static let contentSecurityPolicy = HTTPField.Name("Content-Security-Policy")!
    static let contentTypeOptions = HTTPField.Name("X-Content-Type-Options")!
    static let referrerPolicy = HTTPField.Name("Referrer-Policy")!
    static let policy =
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
        + "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

    /// The directory of the dashboard's files: next to the executable (`Baton_BatonHTTP.resources`, where
    /// `swift build` puts it and where an install must copy it), else where SwiftPM's `Bundle.module` finds it.
    static func directory() -> URL? {
        let beside = Bundle.main.bundleURL.appendingPathComponent("Baton_BatonHTTP.resources").appendingPathComponent("Dashboard")
        if FileManager.default.fileExists(atPath: beside.path) { return beside }
        return Bundle.module.url(forResource: "Dashboard", withExtension: nil)
    }

    /// Reads every file of the dashboard; an empty dashboard (and a warning from the caller) when they are missing.
    static func load() -> Dashboard {
        guard let directory = directory(),
            let names = try? FileManager.default.contentsOfDirectory(atPath: directory.path)
        else { return Dashboard(files: [:]) }
        var files: [String: File] = [:]
        for name in names.sorted() where !name.hasPrefix(".") {
            guard let data = FileManager.default.contents(atPath: directory.appendingPathComponent(name).path) else { continue }
            files["/" + name] = File(contentType: contentType(of: name), body: Array(data))
        }
        return Dashboard(files: files)
    }

    static func contentType(of name: String) -> String {
        switch name.split(separator: ".").last.map(String.init) ?? "" {
        case "html": "text/html; charset=utf-8"
        case "js": "text/javascript; charset=utf-8"
        case "css": "text/css; charset=utf-8"
        case "svg": "image/svg+xml"
        case "json": "application/json"
        default: "application/octet-stream"
        }
    }

    func register(on router: Router<BasicRequestContext>) {
        for (path, file) in files {
            router.get(RouterPath(path)) { _, _ in Self.response(file) }
        }
        if let index = files["/index.html"] {
            router.get("/") { _, _ in Self.response(index) }
        }
    }

    static func response(_ file: File) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = file.contentType
        headers[.cacheControl] = "no-cache"
        headers[contentSecurityPolicy] = policy
        headers[contentTypeOptions] = "nosniff"
        headers[referrerPolicy] = "no-referrer"
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: file.body)))
    }
}
