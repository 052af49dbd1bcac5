//! An empty Tauri window the size of Natter's: the baseline the desktop
//! benchmark (tests/desktop_bench.rs) sets the app's memory beside. Same
//! Tauri, same WebKitGTK, a blank page and nothing else.

fn main() {
    let mut context = tauri::generate_context!();
    context.config_mut().app.windows.clear();
    let result = tauri::Builder::default()
        .setup(|app| {
            let blank = "about:blank".parse().map_err(|err| format!("{err}"))?;
            tauri::WebviewWindowBuilder::new(app, "main", tauri::WebviewUrl::External(blank))
                .title("Empty")
                .inner_size(1000.0, 700.0)
                .build()?;
            Ok(())
        })
        .run(context);
    if let Err(err) = result {
        eprintln!("empty_window: {err}");
        std::process::exit(1);
    }
}
