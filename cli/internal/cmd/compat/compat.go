// Package compat is `palyra compat`: the models of palyrad's OpenAI-compatible API, chat
// completions with one of them from the terminal, and the API's token usage, over the
// CompatService RPCs.
package compat

import (
	"fmt"
	"io"
	"strings"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/palyra/palyra/cli/internal/cmd/deps"
	"github.com/palyra/palyra/cli/internal/output"
	compatv1 "github.com/palyra/palyra/gen/go/palyra/compat/v1"
	"github.com/palyra/palyra/internal/cliusage"
)

// NewCommand returns `palyra compat` and its subcommands.
func NewCommand(d *deps.Deps) *cobra.Command {
	c := &cobra.Command{
		Use:   "compat",
		Short: "Use the OpenAI-compatible API: list its models, chat with one, show its usage",
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	c.AddCommand(newModelsCommand(d), newChatCommand(d), newUsageCommand(d))
	return c
}

func newModelsCommand(d *deps.Deps) *cobra.Command {
	return &cobra.Command{
		Use:   "models",
		Short: "List the models of the OpenAI-compatible API and who serves each",
		Long: `models lists the models clients may name (compat.models.read): those palyrad serves
itself (owned by palyra), then those of each upstream provider.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := d.Client()
			if err != nil {
				return err
			}
			res, err := c.Compat.ListModels(cmd.Context(), connect.NewRequest(&compatv1.ListModelsRequest{}))
			if err != nil {
				return err
			}
			return output.Print(d.Stdout, d.Output, res.Msg, func(w io.Writer) {
				fmt.Fprintln(w, "ID\tOWNED BY")
				for _, m := range res.Msg.GetModels() {
					fmt.Fprintf(w, "%s\t%s\n", output.Cell(m.GetId()), output.Cell(m.GetOwnedBy()))
				}
			})
		},
	}
}

// ParseChatArgs parses the arguments of `compat chat`: a model and a prompt, neither
// empty. Bad arguments are usage errors.
func ParseChatArgs(args []string) (model, prompt string, err error) {
	if len(args) != 2 {
		return "", "", cliusage.Wrap(fmt.Errorf("compat chat takes a model and a prompt, got %d arguments (quote the prompt)", len(args)))
	}
	if args[0] == "" {
		return "", "", cliusage.Wrap(fmt.Errorf("the model is empty: `palyra compat models` lists them"))
	}
	if strings.TrimSpace(args[1]) == "" {
		return "", "", cliusage.Wrap(fmt.Errorf("the prompt is empty"))
	}
	return args[0], args[1], nil
}

func newChatCommand(d *deps.Deps) *cobra.Command {
	var system string
	var noStream bool
	c := &cobra.Command{
		Use:   "chat MODEL PROMPT",
		Short: "Ask a model, and print its answer as it arrives",
		Long: `chat sends PROMPT to MODEL as a chat completion (compat.chat.create) and prints the
answer as the model produces it (a stream: the compat_streaming flag must be on), or
all at once with --no-stream. Control characters in the answer are printed escaped.
With -o json it prints the RPC's answer: each chunk of the stream, or the completion.`,
		Example: `  palyra compat chat palyra-echo "hello there"
  palyra compat chat gpt-4o --system "Answer in one sentence." "What is mTLS?"`,
		// The arguments are checked by ParseChatArgs, with messages that say what is wrong.
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			model, prompt, err := ParseChatArgs(args)
			if err != nil {
				return err
			}
			var msgs []*compatv1.ChatMessage
			if system != "" {
				msgs = append(msgs, &compatv1.ChatMessage{Role: "system", Content: system})
			}
			msgs = append(msgs, &compatv1.ChatMessage{Role: "user", Content: prompt})
			c, err := d.Client()
			if err != nil {
				return err
			}
			if noStream {
				res, err := c.Compat.CreateChatCompletion(cmd.Context(), connect.NewRequest(&compatv1.CreateChatCompletionRequest{Model: model, Messages: msgs}))
				if err != nil {
					return err
				}
				if d.Output == output.JSON {
					return output.Print(d.Stdout, d.Output, res.Msg, nil)
				}
				text := ""
				if ch := res.Msg.GetCompletion().GetChoices(); len(ch) > 0 {
					text = output.Escape(ch[0].GetMessage().GetContent())
				}
				if !strings.HasSuffix(text, "\n") {
					text += "\n"
				}
				_, err = io.WriteString(d.Stdout, text)
				return err
			}
			s, err := c.Compat.StreamChatCompletion(cmd.Context(), connect.NewRequest(&compatv1.StreamChatCompletionRequest{Model: model, Messages: msgs}))
			if err != nil {
				return err
			}
			defer s.Close()
			last := "\n"
			for s.Receive() {
				if d.Output == output.JSON {
					if err := output.Print(d.Stdout, d.Output, s.Msg(), nil); err != nil {
						return err
					}
					continue
				}
				for _, ch := range s.Msg().GetChunk().GetChoices() {
					if text := output.Escape(ch.GetDelta().GetContent()); text != "" {
						if _, err := io.WriteString(d.Stdout, text); err != nil {
							return err
						}
						last = text
					}
				}
			}
			if d.Output != output.JSON && !strings.HasSuffix(last, "\n") {
				fmt.Fprintln(d.Stdout)
			}
			return s.Err()
		},
	}
	c.Flags().StringVar(&system, "system", "", "a system message sent before the prompt")
	c.Flags().BoolVar(&noStream, "no-stream", false, "print the answer once it is complete, not as it arrives")
	return c
}
