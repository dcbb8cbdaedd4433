// Renders Ollama chat templates with Go's real text/template, the way Ollama's
// template.Execute does for templates that use .Messages: system messages stay in
// .Messages and are also joined into .System, consecutive same-role messages are merged
// with a blank line, missing keys render as zero values. Written for tunestack's tests
// (tests/unit/test_converter_ollama_template.py); reads a JSON list of
// {template, messages} on stdin and prints a JSON list of rendered strings.
package main

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"text/template"
)

type message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type testCase struct {
	Template string    `json:"template"`
	Messages []message `json:"messages"`
}

type templateMessage struct {
	Role    string
	Content string
}

func collate(msgs []message) (string, []*templateMessage) {
	var system []string
	var out []*templateMessage
	for _, m := range msgs {
		if m.Role == "system" {
			system = append(system, m.Content)
		}
		if len(out) > 0 && out[len(out)-1].Role == m.Role && m.Role != "tool" {
			out[len(out)-1].Content += "\n\n" + m.Content
		} else {
			out = append(out, &templateMessage{Role: m.Role, Content: m.Content})
		}
	}
	return strings.Join(system, "\n\n"), out
}

func main() {
	var cases []testCase
	if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
		panic(err)
	}
	funcs := template.FuncMap{"json": func(v any) string { b, _ := json.Marshal(v); return string(b) }}
	results := make([]string, 0, len(cases))
	for _, c := range cases {
		t, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(c.Template)
		if err != nil {
			results = append(results, "ERROR: "+err.Error())
			continue
		}
		system, msgs := collate(c.Messages)
		var b bytes.Buffer
		err = t.Execute(&b, map[string]any{"System": system, "Messages": msgs, "Tools": nil, "Response": ""})
		if err != nil {
			results = append(results, "ERROR: "+err.Error())
			continue
		}
		results = append(results, b.String())
	}
	json.NewEncoder(os.Stdout).Encode(results)
}
