using System.Reflection;
using System.Text.RegularExpressions;
using Xunit;

namespace ReadmeSnippets
{
    /// <summary>Marks a class generated from a ```csharp block of a document (see ReadmeSnippets.targets).</summary>
    [AttributeUsage(AttributeTargets.Class)]
    internal sealed class ReadmeSnippetAttribute(string document, int block) : Attribute
    {
        public string Document { get; } = document;
        public int Block { get; } = block;
    }
}

namespace TransformerInference.Tests
{
    /// <summary>The README's C# compiles: the build compiles every block; this checks that every block was taken.</summary>
    public class ReadmeSnippetTests
    {
        [Theory]
        [InlineData("Readme")]
        [InlineData("Package")]
        [InlineData("ToolPackage")]
        public void EveryCSharpBlockOfTheDocumentIsCompiled(string document)
        {
            var text = File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "Docs", document + ".md"));
            var blocks = Regex.Matches(text, @"^\s*```csharp\s*$", RegexOptions.Multiline).Count;
            var compiled = typeof(ReadmeSnippetTests).Assembly.GetTypes()
                .Select(t => t.GetCustomAttribute<ReadmeSnippets.ReadmeSnippetAttribute>())
                .Where(a => a?.Document == document)
                .Select(a => a!.Block)
                .OrderBy(b => b)
                .ToArray();
            Assert.Equal(Enumerable.Range(1, blocks), compiled);
            if (document != "ToolPackage") Assert.True(blocks > 0, $"{document}.md should show C#");
        }
    }
}
