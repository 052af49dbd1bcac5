// Starts the UI: the app's state (filled from the Rust side) and its window.
import "./style.css";
import { mount } from "svelte";
import App from "./App.svelte";
import { app } from "./lib/app.svelte";

mount(App, { target: document.getElementById("app")!, props: { app } });
void app.boot();
