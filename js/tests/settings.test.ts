import { within } from "@testing-library/dom";
import userEvent from "@testing-library/user-event";
import { DEFAULT_SETTINGS, SETTINGS_BOUNDS } from "../src/protocol";
import { flush, mountPerTest } from "./fake-model";

const open = mountPerTest();
/** Sampling on (the default is greedy), so temperature and top p can be edited. */
const sampling = { settings: { ...DEFAULT_SETTINGS, do_sample: true } };

describe("settings", () => {
  it("shows the kernel's settings (the defaults come from Python)", () => {
    const { el } = open();
    expect(DEFAULT_SETTINGS).toEqual({
      system_prompt: "",
      max_new_tokens: 256,
      temperature: 0.7,
      top_p: 0.95,
      do_sample: false, // greedy by default, as GenerationSettings says
    });
    expect(within(el).getByLabelText("Max new tokens")).toHaveValue(256);
    expect(within(el).getByLabelText("Temperature")).toHaveValue(0.7);
    expect(within(el).getByLabelText("Top p")).toHaveValue(0.95);
    expect(within(el).getByLabelText("Sampling")).not.toBeChecked();
    expect(within(el).getByLabelText("System prompt")).toHaveValue("");
  });

  it("offers the kernel's bounds for each number", () => {
    const { el } = open();
    const temperature = within(el).getByLabelText("Temperature");
    expect(temperature).toHaveAttribute("min", String(SETTINGS_BOUNDS.temperature.min));
    expect(temperature).toHaveAttribute("max", String(SETTINGS_BOUNDS.temperature.max));
    expect(within(el).getByLabelText("Max new tokens")).toHaveAttribute("max", "32768");
  });

  it("sends each committed change as a partial set_settings", async () => {
    const user = userEvent.setup();
    const { model, el } = open();
    const tokens = within(el).getByLabelText("Max new tokens");
    await user.clear(tokens);
    await user.type(tokens, "512");
    await user.tab();
    await user.click(within(el).getByLabelText("Sampling"));
    await user.type(within(el).getByLabelText("System prompt"), "Be brief.");
    await user.tab();
    expect(model.intents().map((r) => r.kind === "set_settings" && r.settings)).toEqual([
      { max_new_tokens: 512 },
      { do_sample: true },
      { system_prompt: "Be brief." },
    ]);
  });

  it("refuses out-of-range numbers before sending, saying what to type", async () => {
    const user = userEvent.setup();
    const { model, el } = open(sampling);
    const topP = within(el).getByLabelText("Top p");
    await user.clear(topP);
    await user.type(topP, "3");
    await user.tab();
    expect(model.intents()).toHaveLength(0);
    expect(topP).toHaveAttribute("aria-invalid", "true");
    expect(topP).toHaveAccessibleDescription("Top p: enter a value from 0.01 to 1.");
  });

  it("does not overwrite a field being edited, and shows kernel values elsewhere", async () => {
    const user = userEvent.setup();
    const { model, el } = open(sampling);
    const temperature = within(el).getByLabelText("Temperature");
    await user.clear(temperature);
    await user.type(temperature, "1.2");
    model.update({
      settings: {
        system_prompt: "",
        max_new_tokens: 64,
        temperature: 0.1,
        top_p: 0.5,
        do_sample: true,
      },
    });
    expect(temperature).toHaveValue(1.2);
    expect(within(el).getByLabelText("Max new tokens")).toHaveValue(64);
  });

  it("returns to the kernel's value when it refuses a change", async () => {
    const user = userEvent.setup();
    const { model, el } = open();
    const tokens = within(el).getByLabelText("Max new tokens");
    await user.clear(tokens);
    await user.type(tokens, "9000");
    await user.tab();
    model.reply(false, "max_new_tokens is above this model's context (2048)");
    await flush();
    expect(tokens).toHaveValue(256);
    expect(tokens).toHaveAccessibleDescription(
      "max_new_tokens is above this model's context (2048)",
    );
  });
});

describe("greedy decoding", () => {
  it("disables temperature and top p while sampling is off, and enables them with it", () => {
    const { model, el } = open(sampling);
    const temperature = within(el).getByLabelText("Temperature");
    const topP = within(el).getByLabelText("Top p");
    expect(temperature).toBeEnabled();
    model.update({ settings: { ...model.state.settings, do_sample: false } });
    expect(temperature).toBeDisabled();
    expect(topP).toBeDisabled();
    expect(within(el).getByLabelText("Max new tokens")).toBeEnabled();
    model.update({ settings: { ...model.state.settings, do_sample: true } });
    expect(temperature).toBeEnabled();
    expect(topP).toBeEnabled();
  });
});
