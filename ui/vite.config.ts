import { defineConfig } from "vite";

// Tauri serves the built files; `npm run dev` serves them on 5173 for `tauri dev`.
export default defineConfig({
  clearScreen: false,
  server: { port: 5173, strictPort: true },
  build: { target: "safari15", outDir: "dist", emptyOutDir: true },
});
