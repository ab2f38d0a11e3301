"""The browser layer: the app driven in headless Chromium with Playwright (skipped without the system Chromium)."""
